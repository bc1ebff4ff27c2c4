package oidcauth

import "strings"

// grantedScopes reads the scopes an access token grants: the `scope`
// claim (space-separated, RFC 9068 and RFC 8693) or `scp` (an array, as
// Okta sends it, or a string, as Entra ID does).
func grantedScopes(claims map[string]any) map[string]bool {
	out := map[string]bool{}
	for _, name := range []string{"scope", "scp"} {
		switch v := claims[name].(type) {
		case string:
			for _, s := range strings.Fields(v) {
				out[s] = true
			}
		case []any:
			for _, e := range v {
				if s, ok := e.(string); ok {
					out[s] = true
				}
			}
		}
	}
	return out
}

// missingScopes lists the scopes of want that the access token with these
// claims does not grant.
func missingScopes(claims map[string]any, want []string) []string {
	granted := grantedScopes(claims)
	var missing []string
	for _, s := range want {
		if !granted[s] {
			missing = append(missing, s)
		}
	}
	return missing
}
