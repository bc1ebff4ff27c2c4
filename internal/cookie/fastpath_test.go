package cookie

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// sealedSession returns the session cookie value WriteSession sets for s.
func sealedSession(t *testing.T, c *Codec, s *Session) string {
	t.Helper()
	rec := httptest.NewRecorder()
	if err := c.WriteSession(rec, httptest.NewRequest(http.MethodGet, "/", nil), s, 3600); err != nil {
		t.Fatal(err)
	}
	cks := rec.Result().Cookies()
	if len(cks) != 1 {
		t.Fatalf("%d cookies, want one", len(cks))
	}
	return cks[0].Value
}

// TestReadSessionSeenBeforeAllocatesNothing: a session decoded before is
// found from the Cookie header without net/http's parse of every cookie,
// which allocates on each request.
func TestReadSessionSeenBeforeAllocatesNothing(t *testing.T) {
	c := newTestCodec(t)
	v := sealedSession(t, c, testSession())
	r := httptest.NewRequest(http.MethodGet, "/", nil)
	r.Header.Set("Cookie", "theme=dark; oidc_test="+v+"; lang=en")
	if _, err := c.ReadSession(r); err != nil {
		t.Fatal(err)
	}
	allocs := testing.AllocsPerRun(100, func() {
		if _, err := c.ReadSession(r); err != nil {
			t.Fatal(err)
		}
	})
	if allocs != 0 {
		t.Errorf("ReadSession of a session seen before: %v allocations, want 0", allocs)
	}
}

// TestReadSessionPicksCookieAsNetHTTP: the shortcut finds the same cookie
// as r.Cookie: the first valid one of the exact name.
func TestReadSessionPicksCookieAsNetHTTP(t *testing.T) {
	c := newTestCodec(t)
	a, b := testSession(), testSession()
	a.ID, b.ID = "session-a", "session-b"
	va, vb := sealedSession(t, c, a), sealedSession(t, c, b)
	// Both decoded once, so both are in the cache.
	for _, v := range []string{va, vb} {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Cookie", "oidc_test="+v)
		if _, err := c.ReadSession(r); err != nil {
			t.Fatal(err)
		}
	}
	tests := []struct {
		name   string
		header []string
		want   string // session ID, "" for none
	}{
		{"first of two", []string{"oidc_test=" + va + "; oidc_test=" + vb}, "session-a"},
		{"first of two lines", []string{"x=1; oidc_test=" + vb, "oidc_test=" + va}, "session-b"},
		{"spaces around", []string{"  oidc_test = " + va + " ;x=1"}, ""},
		{"spaces around the name", []string{"x=1;  oidc_test=" + va + "  "}, "session-a"},
		{"invalid first, valid second", []string{`oidc_test="` + va + `\"; oidc_test=` + vb}, "session-b"},
		{"quoted", []string{`oidc_test="` + va + `"`}, "session-a"},
		{"longer name", []string{"xoidc_test=" + va + "; oidc_test_1=" + va}, ""},
		{"prefixed name", []string{"__Host-oidc_test=" + va}, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodGet, "/", nil)
			r.Header["Cookie"] = tt.header
			want := tt.want
			// The reference: what net/http's parse finds.
			ck, err := r.Cookie("oidc_test")
			switch {
			case err != nil && want != "":
				t.Fatalf("net/http finds no cookie, the test wants %s", want)
			case err == nil && ck.Value != va && ck.Value != vb && want != "":
				t.Fatalf("net/http finds %q", ck.Value)
			}
			s, err := c.ReadSession(r)
			got := ""
			if err == nil {
				got = s.ID
			}
			if got != want {
				t.Errorf("ReadSession found %q, want %q", got, want)
			}
		})
	}
}
