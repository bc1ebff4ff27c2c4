package oidcauth

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
)

// authTimeSkew is how far an ID token's auth_time may lie beyond the
// max_age of its request: the clocks of the IdP and this server differ a
// little, and the user takes a moment to come back.
const authTimeSkew = time.Minute

// stepUpNeeded reports whether the authentication behind claims (an ID
// token's for a session, the access token's for a bearer token) is too
// weak for this handler: an `acr` outside a `require acr` rule, or an
// `auth_time` missing or older than max_age. It returns what to ask for.
func (m *OIDCAuth) stepUpNeeded(claims map[string]any, now time.Time) ([]string, int64, bool) {
	need := false
	acr, _ := claims["acr"].(string)
	for _, r := range m.Require {
		if r.Claim == "acr" && !ruleMatches(r.Values, acr) {
			need = true
		}
	}
	maxAge := m.maxAgeSeconds()
	if maxAge > 0 {
		at := claimInt(claims, "auth_time")
		if at <= 0 || now.Unix()-at > maxAge {
			need = true
		}
	}
	if !need {
		return nil, 0, false
	}
	return m.requiredValues("acr"), maxAge, true
}

// stepUpHints carries acr_values and max_age to startLogin.
func (m *OIDCAuth) stepUpHints(acr []string, maxAge int64) map[string]string {
	h := map[string]string{}
	if len(acr) > 0 {
		h["acr_values"] = strings.Join(acr, " ")
	}
	if maxAge > 0 {
		h["max_age"] = strconv.FormatInt(maxAge, 10)
	}
	if len(h) == 0 {
		return nil
	}
	return h
}

func isStepUpParam(name string) bool { return name == "acr_values" || name == "max_age" }

// stepUpParams adds a step-up's acr_values and max_age to an authorization
// request, over any auth_param of the same name, and records in st what
// was asked for (from either source), for checkAuthentication.
func stepUpParams(st *loginState, hints, authParams map[string]string) []oauth2.AuthCodeOption {
	var opts []oauth2.AuthCodeOption
	value := func(name string) string {
		if v := hints[name]; v != "" {
			opts = append(opts, oauth2.SetAuthURLParam(name, v))
			return v
		}
		return authParams[name]
	}
	st.ACRValues = value("acr_values")
	if n, err := strconv.ParseInt(value("max_age"), 10, 64); err == nil && n > 0 {
		st.MaxAge = n
	}
	return opts
}

// checkAuthentication checks an ID token's acr and auth_time against what
// its authorization request asked for (OIDC Core 3.1.3.7, steps 11 and
// 12). A login that comes back too weak ends here with an error page
// instead of being sent to the IdP again and again. It returns why the
// login is refused, or "".
func (m *OIDCAuth) checkAuthentication(raw json.RawMessage, st *loginState, now time.Time) string {
	if st.ACRValues == "" && st.MaxAge == 0 {
		return ""
	}
	var claims map[string]any
	if err := json.Unmarshal(raw, &claims); err != nil {
		return "unreadable ID token claims"
	}
	if st.ACRValues != "" {
		acr, _ := claims["acr"].(string)
		if !containsString(strings.Fields(st.ACRValues), acr) {
			if acr == "" {
				return fmt.Sprintf("no acr, asked for %q", st.ACRValues)
			}
			return fmt.Sprintf("acr %q, asked for %q", acr, st.ACRValues)
		}
	}
	if st.MaxAge > 0 {
		at := claimInt(claims, "auth_time")
		if at <= 0 {
			return "no auth_time, though max_age was asked for"
		}
		if now.Unix()-at > st.MaxAge+int64(authTimeSkew/time.Second) {
			return fmt.Sprintf("authenticated %ds ago, max_age %d", now.Unix()-at, st.MaxAge)
		}
	}
	return ""
}

// checkStepUp checks max_age and the `require acr` rules.
func (m *OIDCAuth) checkStepUp() error {
	if d := time.Duration(m.MaxAge); d < 0 || (d > 0 && d < time.Second) {
		return fmt.Errorf("max_age: must be at least 1s, got %s", d)
	}
	for _, v := range m.requiredValues("acr") {
		if v == "" || strings.ContainsAny(v, " \"\\*") {
			return fmt.Errorf("require: acr value %q must be a single value without spaces, quotes or *", v)
		}
	}
	if len(m.requiredValues("acr")) > 0 || m.MaxAge > 0 {
		for _, name := range []string{"acr_values", "max_age"} {
			if _, ok := m.AuthParams[name]; ok {
				return errors.New("auth_param: " + name + " conflicts with require acr / max_age, which ask for it themselves")
			}
		}
	}
	return nil
}
