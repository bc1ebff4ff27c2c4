package oidcauth

import (
	"encoding/json"
	"sort"
	"strconv"
	"strings"
	"unicode"
)

// identity is what a session tells about its user: the claims of the ID
// token, completed by those of the access token (Scalekit puts oid, roles
// and permissions there), and the placeholders made from them.
type identity struct {
	claims       map[string]any
	placeholders [][2]string       // sorted by name
	values       map[string]string // the same, for lookups
	access       map[string]any    // the access token's own claims
	// provide is replace as a func value, made once: a method value made
	// on every request would be an allocation there.
	provide func(key string) (any, bool)
}

// placeholderPrefix is the namespace of the identity placeholders.
const placeholderPrefix = "http.auth.user."

// replace serves the identity placeholders to a request's replacer. Values
// are looked up only when a placeholder is used, so an unused claim costs
// nothing per request.
func (id *identity) replace(key string) (any, bool) {
	if len(key) <= len(placeholderPrefix) || key[:len(placeholderPrefix)] != placeholderPrefix {
		return nil, false
	}
	// A claim this user lacks is empty rather than left as literal text
	// (header_up and other ReplaceKnown users would pass "{...}" on).
	return id.values[key], true
}

// buildIdentity merges the access token's claims with the session's.
func buildIdentity(accessClaims map[string]any, s *session) *identity {
	claims := map[string]any{}
	for k, val := range accessClaims {
		claims[k] = val
	}
	if len(s.Claims) > 0 {
		var idc map[string]any
		if json.Unmarshal(s.Claims, &idc) == nil {
			for k, val := range idc {
				claims[k] = val
			}
		}
	}
	claims["sub"] = s.Subject
	if s.SID != "" {
		if _, ok := claims["sid"]; !ok {
			claims["sid"] = s.SID
		}
	}
	id := &identity{claims: claims, access: accessClaims}
	id.provide = id.replace
	id.placeholders = append(id.placeholders, [2]string{placeholderPrefix + "id", cleanPlaceholder(s.Subject)})
	flattenClaims(placeholderPrefix, claims, &id.placeholders)
	sort.Slice(id.placeholders, func(i, j int) bool { return id.placeholders[i][0] < id.placeholders[j][0] })
	id.values = make(map[string]string, len(id.placeholders))
	for _, kv := range id.placeholders {
		id.values[kv[0]] = kv[1]
	}
	return id
}

// flattenClaims turns claims into placeholder pairs: nested objects by
// dotted name, arrays joined with commas.
func flattenClaims(prefix string, claims map[string]any, out *[][2]string) {
	for k, val := range claims {
		if k == "" {
			continue
		}
		switch t := val.(type) {
		case map[string]any:
			flattenClaims(prefix+k+".", t, out)
		case nil:
		default:
			*out = append(*out, [2]string{prefix + k, cleanPlaceholder(claimString(val))})
		}
	}
}

// cleanPlaceholder replaces control characters (CR, LF, NUL, the C1
// range...) with spaces. Placeholders end up in request and response
// headers, where such characters are invalid: a user's own claim (a name
// they chose) would otherwise make every request they send fail at the
// reverse proxy. Rules and the session info endpoint see the claims as
// they are.
func cleanPlaceholder(s string) string {
	clean := true
	for _, r := range s {
		if unicode.IsControl(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return ' '
		}
		return r
	}, s)
}

func claimString(v any) string {
	switch t := v.(type) {
	case string:
		return t
	case float64:
		return strconv.FormatFloat(t, 'f', -1, 64)
	case bool:
		return strconv.FormatBool(t)
	case []any:
		parts := make([]string, 0, len(t))
		for _, e := range t {
			parts = append(parts, claimString(e))
		}
		return strings.Join(parts, ",")
	case nil:
		return ""
	default:
		b, _ := json.Marshal(t)
		return string(b)
	}
}

// lookupClaim finds a claim by name, or by a dotted path into nested
// objects when no claim has the whole name (names such as URLs may
// contain dots themselves).
func lookupClaim(claims map[string]any, name string) (any, bool) {
	if v, ok := claims[name]; ok {
		return v, true
	}
	cur := claims
	parts := strings.Split(name, ".")
	for i, p := range parts {
		v, ok := cur[p]
		if !ok {
			return nil, false
		}
		if i == len(parts)-1 {
			return v, true
		}
		if cur, ok = v.(map[string]any); !ok {
			return nil, false
		}
	}
	return nil, false
}

// accessRules are the require rules, and how they read email.
type accessRules struct {
	rules                []Rule
	allowUnverifiedEmail bool
}

// allow reports whether every require rule holds for the identity. A
// rule on email also needs email_verified, unless allow_unverified_email.
func (a accessRules) allow(id *identity) bool {
	for _, rule := range a.rules {
		if rule.Claim == "acr" {
			continue // a step-up, not a refusal: see stepUpNeeded
		}
		if rule.Claim == "scope" {
			if len(missingScopes(id.access, rule.Values)) > 0 {
				return false
			}
			continue
		}
		v, ok := lookupClaim(id.claims, rule.Claim)
		if !ok || !ruleMatches(rule.Values, v) {
			return false
		}
		if rule.Claim == "email" && !a.allowUnverifiedEmail && !emailVerified(id.claims) {
			return false
		}
	}
	return true
}

// emailVerified reads the email_verified claim: true, or the string
// "true" that some providers (Amazon Cognito among them) send.
func emailVerified(claims map[string]any) bool {
	switch v := claims["email_verified"].(type) {
	case bool:
		return v
	case string:
		return strings.EqualFold(v, "true")
	}
	return false
}

func ruleMatches(patterns []string, v any) bool {
	if list, ok := v.([]any); ok {
		for _, e := range list {
			if ruleMatches(patterns, e) {
				return true
			}
		}
		return false
	}
	switch v.(type) {
	case map[string]any, nil:
		return false // an object or a null claim equals no value
	}
	s := claimString(v)
	for _, p := range patterns {
		if globMatch(p, s) {
			return true
		}
	}
	return false
}

// globMatch matches s against a pattern in which '*' stands for any run
// of characters; every other character matches itself.
func globMatch(pattern, s string) bool {
	if !strings.Contains(pattern, "*") {
		return pattern == s
	}
	parts := strings.Split(pattern, "*")
	if !strings.HasPrefix(s, parts[0]) {
		return false
	}
	s = s[len(parts[0]):]
	last := parts[len(parts)-1]
	for _, p := range parts[1 : len(parts)-1] {
		i := strings.Index(s, p)
		if i < 0 {
			return false
		}
		s = s[i+len(p):]
	}
	return len(s) >= len(last) && strings.HasSuffix(s, last)
}

func claimInt(claims map[string]any, name string) int64 {
	f, _ := claims[name].(float64)
	return int64(f)
}

// principal is a request's authenticated user.
type principal struct {
	session     *session // nil for a bearer token
	id          *identity
	accessToken string
	expiry      int64 // access token expiry, unix seconds

	refused refusal // why there is no user, when resolve says so
}

func (p *principal) subject() string {
	sub, _ := p.id.claims["sub"].(string)
	return sub
}

// Rule is one access rule: the claim must equal one of the values (or, for
// an array claim, contain one). Values may use `*` as a wildcard.
type Rule struct {
	// The claim's name; a dotted name reaches into nested objects.
	Claim string `json:"claim"`
	// The accepted values; at least one.
	Values []string `json:"values"`
}

// refusal says why a request has no user, and so how it is answered. It
// is one byte, so that a principal stays as small as it was: one is made
// for every request.
type refusal uint8

const (
	// noSession: neither a session cookie nor (in bearer mode) a bearer
	// token. A browser is sent to log in; an API call gets a 401.
	noSession refusal = iota
	// sessionEnded: the session cookie's session has ended (lifetime,
	// logout, expiry, refresh refused, invalid token); its cookies are
	// cleared, then as noSession.
	sessionEnded
	// forbidden: signed in, but the require rules turn the user away (403).
	forbidden
	// bearerInvalid, bearerEnded, bearerForbidden: a bearer token is
	// invalid or expired, its session has ended, or its user fails the
	// require rules: 401 (403) with an RFC 6750 challenge.
	bearerInvalid
	bearerEnded
	bearerForbidden
	// bearerScope: a bearer token lacks a scope of `require scope` (403
	// insufficient_scope naming the scopes).
	bearerScope
	// stepUp: the user's authentication is weaker or older than `require
	// acr` / max_age ask: a browser logs in again asking for them, anything
	// else gets 401 insufficient_user_authentication (RFC 9470).
	stepUp
	// dpopInvalidToken, dpopInvalidProof: a DPoP refusal (RFC 9449): the
	// token (its binding, or its scheme) or the proof is wrong.
	dpopInvalidToken
	dpopInvalidProof
)

// signIn reports whether logging in can help: no session, or an ended one.
func (why refusal) signIn() bool { return why == noSession || why == sessionEnded }

// deny is resolve's answer for a request without an acceptable user.
func deny(why refusal) (*principal, bool, error) {
	return &principal{refused: why}, false, nil
}

// requiredValues is every value that the `require <claim>` rules ask for,
// in the order they are written, each once: the scopes of `require scope`,
// the acr values of `require acr`.
func (m *OIDCAuth) requiredValues(claim string) []string {
	var out []string
	for _, r := range m.Require {
		if r.Claim != claim {
			continue
		}
		for _, v := range r.Values {
			if !containsString(out, v) {
				out = append(out, v)
			}
		}
	}
	return out
}
