package cookie

import (
	"net/http"
	"reflect"
	"strings"
	"testing"
)

func TestStripOwnCookies(t *testing.T) {
	c := newTestCodec(t)
	for _, tc := range []struct {
		name string
		in   []string
		want []string // nil: no Cookie header left
	}{
		{"only own", []string{"oidc_test=abc"}, nil},
		{"own in every spelling", []string{"__Host-oidc_test=a; __Secure-oidc_test_idt=b; oidc_test_1=c; oidc_test_s_x=d; oidc_test_lg=2"}, nil},
		{"others kept", []string{"theme=dark; oidc_test=abc; lang=nl"}, []string{"theme=dark; lang=nl"}},
		{"several lines", []string{"theme=dark", "oidc_test=abc", "a=1; oidc_test_lg=1; b=2"}, []string{"theme=dark", "a=1; b=2"}},
		{"nothing own", []string{"theme=dark", "oidc_testx=1; other_oidc_test=2"}, []string{"theme=dark", "oidc_testx=1; other_oidc_test=2"}},
		{"value looks like a name", []string{"theme=oidc_test_lg; x=oidc_test"}, []string{"theme=oidc_test_lg; x=oidc_test"}},
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
	only := []string{"oidc_test=" + strings.Repeat("v", 800)}
	if allocs := testing.AllocsPerRun(100, func() { c.StripOwnCookies(http.Header{"Cookie": only}) }); allocs > 1 {
		t.Errorf("%v allocations for a request with the session cookie only (the header map is one)", allocs)
	}
}

func TestHasLoopCookie(t *testing.T) {
	c := newTestCodec(t)
	for line, want := range map[string]bool{
		"oidc_test_lg=1":                        true,
		"__Host-oidc_test_lg=1":                 true,
		"oidc_test=abc; oidc_test_lg=2":         true,
		" oidc_test=abc ;  oidc_test_lg =2":     true,
		"oidc_test=abc":                         false,
		"oidc_test=x_lg=1":                      false,
		"theme=oidc_test_lg=1; other_lg=1":      false,
		"oidc_test=" + strings.Repeat("a", 900): false,
	} {
		if got := c.hasLoopCookie(http.Header{"Cookie": {line}}); got != want {
			t.Errorf("%.40q: %v, want %v", line, got, want)
		}
	}
}
