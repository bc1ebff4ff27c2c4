package oidcauth

import (
	"encoding/json"
	"reflect"
	"sort"
	"testing"
)

func TestClaimString(t *testing.T) {
	tests := []struct {
		name string
		in   any
		want string
	}{
		{"string", "bob", "bob"},
		{"empty string", "", ""},
		{"integer", float64(42), "42"},
		{"negative", float64(-7), "-7"},
		{"fraction", 1.5, "1.5"},
		{"large integer without exponent", float64(1e21), "1000000000000000000000"},
		{"unix time without exponent", float64(1700000000), "1700000000"},
		{"small fraction without exponent", 0.000001, "0.000001"},
		{"true", true, "true"},
		{"false", false, "false"},
		{"nil", nil, ""},
		{"array", []any{"a", "b", "c"}, "a,b,c"},
		{"mixed array", []any{"a", float64(1), true}, "a,1,true"},
		{"empty array", []any{}, ""},
		{"object", map[string]any{"k": "v"}, `{"k":"v"}`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := claimString(tt.in); got != tt.want {
				t.Errorf("claimString(%#v) = %q, want %q", tt.in, got, tt.want)
			}
		})
	}
}

func decodeClaims(t *testing.T, raw string) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal([]byte(raw), &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestFlattenClaims(t *testing.T) {
	claims := decodeClaims(t, `{
		"email": "u@example.com",
		"email_verified": true,
		"groups": ["admins", "staff"],
		"updated_at": 1700000000,
		"score": 1e21,
		"address": {"country": "DE", "geo": {"lat": 52.5}},
		"https://example.com/roles": ["r1"],
		"nothing": null,
		"": "no name"
	}`)
	var got [][2]string
	flattenClaims("http.auth.user.", claims, &got)
	sort.Slice(got, func(i, j int) bool { return got[i][0] < got[j][0] })
	want := [][2]string{
		{"http.auth.user.address.country", "DE"},
		{"http.auth.user.address.geo.lat", "52.5"},
		{"http.auth.user.email", "u@example.com"},
		{"http.auth.user.email_verified", "true"},
		{"http.auth.user.groups", "admins,staff"},
		{"http.auth.user.https://example.com/roles", "r1"},
		{"http.auth.user.score", "1000000000000000000000"},
		{"http.auth.user.updated_at", "1700000000"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("flattenClaims =\n%v\nwant\n%v", got, want)
	}
}

func TestLookupClaim(t *testing.T) {
	claims := decodeClaims(t, `{
		"email": "u@example.com",
		"a.b": "exact",
		"a": {"b": "nested", "c": {"d": "deep"}},
		"org": {"id": "o1"},
		"https://example.com/roles": ["r1", "r2"],
		"flag": false
	}`)
	tests := []struct {
		name   string
		claim  string
		want   any
		wantOK bool
	}{
		{"plain", "email", "u@example.com", true},
		{"exact name with dots wins", "a.b", "exact", true},
		{"nested path", "a.c.d", "deep", true},
		{"nested object", "org", map[string]any{"id": "o1"}, true},
		{"nested value", "org.id", "o1", true},
		{"URL claim name", "https://example.com/roles", []any{"r1", "r2"}, true},
		{"false value is found", "flag", false, true},
		{"missing", "nope", nil, false},
		{"missing nested", "org.name", nil, false},
		{"path through a string", "email.x", nil, false},
		{"path past a leaf", "org.id.x", nil, false},
		{"empty name", "", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, ok := lookupClaim(claims, tt.claim)
			if ok != tt.wantOK || !reflect.DeepEqual(got, tt.want) {
				t.Errorf("lookupClaim(%q) = %#v, %v; want %#v, %v", tt.claim, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestGlobMatch(t *testing.T) {
	tests := []struct {
		pattern, s string
		want       bool
	}{
		{"admin", "admin", true},
		{"admin", "administrator", false},
		{"admin", "sysadmin", false},
		{"admin", "Admin", false},
		{"", "", true},
		{"", "x", false},
		{"*", "", true},
		{"*", "anything", true},
		{"**", "anything", true},
		{"*@example.com", "bob@example.com", true},
		{"*@example.com", "@example.com", true},
		{"*@example.com", "bob@example.com.evil.net", false},
		{"*@example.com", "bob@evil-example.com", false},
		{"*@example.com", "bob@sub.example.com", false},
		{"*.example.com", "a.b.example.com", true},
		{"a*b*c", "abc", true},
		{"a*b*c", "aXbYc", true},
		{"a*b*c", "abbc", true},
		{"a*b*c", "aXXbYYbZZc", true},
		{"a*b*c", "acb", false},
		{"a*b*c", "ab", false},
		{"a*b*c", "abcd", false},
		{"a*b*c", "xabc", false},
		{"a*a", "a", false},
		{"a*a", "aa", true},
		{"ab*b", "ab", false},
		{"ab*ba", "aba", false},
		{"pre*", "prefix", true},
		{"pre*", "pr", false},
		{"*fix", "suffix", true},
		{"*fix", "fixed", false},
		{"a?c", "abc", false}, // only '*' is special
		{"[ab]", "a", false},
	}
	for _, tt := range tests {
		t.Run(tt.pattern+"~"+tt.s, func(t *testing.T) {
			if got := globMatch(tt.pattern, tt.s); got != tt.want {
				t.Errorf("globMatch(%q, %q) = %v, want %v", tt.pattern, tt.s, got, tt.want)
			}
		})
	}
}

func TestRuleMatches(t *testing.T) {
	tests := []struct {
		name     string
		patterns []string
		claim    string // JSON
		want     bool
	}{
		{"equal string", []string{"admin"}, `"admin"`, true},
		{"one of several values", []string{"a", "admin"}, `"admin"`, true},
		{"no value matches", []string{"a", "b"}, `"admin"`, false},
		{"no partial match without *", []string{"adm"}, `"admin"`, false},
		{"glob", []string{"*@example.com"}, `"u@example.com"`, true},
		{"array contains", []string{"admin"}, `["staff", "admin"]`, true},
		{"array contains a glob", []string{"team-*"}, `["staff", "team-x"]`, true},
		{"array does not contain", []string{"admin"}, `["staff", "administrators"]`, false},
		{"empty array", []string{"*"}, `[]`, false},
		{"nested array", []string{"x"}, `[["x"]]`, true},
		{"number", []string{"42"}, `42`, true},
		{"bool", []string{"true"}, `true`, true},
		{"bool false is not true", []string{"true"}, `false`, false},
		{"object never matches", []string{"*"}, `{"a": "b"}`, false},
		{"array joined string does not match", []string{"a,b"}, `["a", "b"]`, false},
		{"null only matches an empty-string pattern", []string{"x"}, `null`, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var v any
			if err := json.Unmarshal([]byte(tt.claim), &v); err != nil {
				t.Fatal(err)
			}
			if got := ruleMatches(tt.patterns, v); got != tt.want {
				t.Errorf("ruleMatches(%q, %s) = %v, want %v", tt.patterns, tt.claim, got, tt.want)
			}
		})
	}
}

func TestAllowed(t *testing.T) {
	id := &identity{claims: decodeClaims(t, `{
		"sub": "u1",
		"email": "u@example.com",
		"groups": ["staff", "dev"],
		"org": {"id": "o1"},
		"email_verified": true
	}`)}
	tests := []struct {
		name  string
		rules []Rule
		want  bool
	}{
		{"no rules", nil, true},
		{"one rule holds", []Rule{{Claim: "email", Values: []string{"*@example.com"}}}, true},
		{"one rule fails", []Rule{{Claim: "email", Values: []string{"*@other.com"}}}, false},
		{"all rules hold", []Rule{
			{Claim: "email", Values: []string{"*@example.com"}},
			{Claim: "groups", Values: []string{"admins", "dev"}},
			{Claim: "org.id", Values: []string{"o1"}},
			{Claim: "email_verified", Values: []string{"true"}},
		}, true},
		{"one of several fails", []Rule{
			{Claim: "email", Values: []string{"*@example.com"}},
			{Claim: "groups", Values: []string{"admins"}},
		}, false},
		{"missing claim", []Rule{{Claim: "roles", Values: []string{"*"}}}, false},
		{"sub", []Rule{{Claim: "sub", Values: []string{"u1"}}}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := (accessRules{rules: tt.rules}).allow(id); got != tt.want {
				t.Errorf("allowed = %v, want %v", got, tt.want)
			}
		})
	}
}

func TestIdentityFor(t *testing.T) {
	v := &verifiedToken{claims: map[string]any{
		"sub":   "access-sub",
		"roles": []any{"a", "b"},
		"email": "from-access@example.com",
		"oid":   "org_1",
	}}
	s := &session{
		Subject: "user-1",
		SID:     "sid-1",
		Claims:  json.RawMessage(`{"email":"u@example.com","name":"U Ser","address":{"country":"DE"}}`),
	}
	id := v.identityFor(s)
	got := map[string]string{}
	for i, kv := range id.placeholders {
		got[kv[0]] = kv[1]
		if i > 0 && id.placeholders[i-1][0] > kv[0] {
			t.Errorf("placeholders not sorted at %q", kv[0])
		}
	}
	want := map[string]string{
		"http.auth.user.id":              "user-1",
		"http.auth.user.sub":             "user-1",
		"http.auth.user.sid":             "sid-1",
		"http.auth.user.email":           "u@example.com", // the ID token's claim wins
		"http.auth.user.name":            "U Ser",
		"http.auth.user.roles":           "a,b",
		"http.auth.user.oid":             "org_1",
		"http.auth.user.address.country": "DE",
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("placeholders = %v\nwant %v", got, want)
	}
	if id.claims["sub"] != "user-1" {
		t.Errorf("sub claim = %v, want the session's subject", id.claims["sub"])
	}
	if again := v.identityFor(s); again != id {
		t.Error("identity is not cached per verified token")
	}

	// An opaque access token: only the session's claims.
	id = (&verifiedToken{}).identityFor(&session{Subject: "u2", Claims: json.RawMessage(`{"sid":"from-id-token"}`)})
	got = map[string]string{}
	for _, kv := range id.placeholders {
		got[kv[0]] = kv[1]
	}
	if got["http.auth.user.id"] != "u2" || got["http.auth.user.sid"] != "from-id-token" {
		t.Errorf("opaque token placeholders = %v", got)
	}
}
