package cookie

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestStripOwnCookies(t *testing.T) {
	c, err := New([]byte(strings.Repeat("k", 32)), "https://idp.example.com", "app-1", "oidc")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		in   []string
		want []string // nil: no Cookie header left
	}{
		{"only own", []string{"oidc=abc"}, nil},
		{"own in every spelling", []string{"__Host-oidc=a; __Secure-oidc_idt=b; oidc_1=c; oidc_s_x=d; oidc_lg=2"}, nil},
		{"others kept", []string{"theme=dark; oidc=abc; lang=nl"}, []string{"theme=dark; lang=nl"}},
		{"several lines", []string{"theme=dark", "oidc=abc", "a=1; oidc_lg=1; b=2"}, []string{"theme=dark", "a=1; b=2"}},
		{"nothing own", []string{"theme=dark", "oidcx=1; other_oidc=2"}, []string{"theme=dark", "oidcx=1; other_oidc=2"}},
		{"value looks like a name", []string{"theme=oidc_lg; x=oidc"}, []string{"theme=oidc_lg; x=oidc"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orig := append([]string(nil), tc.in...)
			h := http.Header{"Cookie": tc.in}
			c.StripOwnCookies(h)
			if got := h["Cookie"]; !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Cookie = %q, want %q", got, tc.want)
			}
			if !reflect.DeepEqual(tc.in, orig) {
				t.Errorf("the request's own slice was changed: %q", tc.in)
			}
		})
	}
	h := http.Header{"Cookie": {"theme=dark; lang=nl", "a=1"}}
	if allocs := testing.AllocsPerRun(100, func() { c.StripOwnCookies(h) }); allocs != 0 {
		t.Errorf("%v allocations for a request without own cookies", allocs)
	}
	only := []string{"oidc=" + strings.Repeat("v", 800)}
	if allocs := testing.AllocsPerRun(100, func() { c.StripOwnCookies(http.Header{"Cookie": only}) }); allocs > 1 {
		t.Errorf("%v allocations for a request with the session cookie only (the header map is one)", allocs)
	}
}

func TestHasLoopCookie(t *testing.T) {
	c, err := New([]byte(strings.Repeat("k", 32)), "https://idp.example.com", "app-1", "oidc")
	if err != nil {
		t.Fatal(err)
	}
	for line, want := range map[string]bool{
		"oidc_lg=1":                        true,
		"__Host-oidc_lg=1":                 true,
		"oidc=abc; oidc_lg=2":              true,
		" oidc=abc ;  oidc_lg =2":          true,
		"oidc=abc":                         false,
		"oidc=x_lg=1":                      false,
		"theme=oidc_lg=1; other_lg=1":      false,
		"oidc=" + strings.Repeat("a", 900): false,
	} {
		if got := c.hasLoopCookie(http.Header{"Cookie": {line}}); got != want {
			t.Errorf("%.40q: %v, want %v", line, got, want)
		}
	}
}
