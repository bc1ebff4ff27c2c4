package oidcauth

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	caddycmd "github.com/caddyserver/caddy/v2/cmd"
	"github.com/spf13/cobra"

	"github.com/caddy-oidc-auth/oidcauth/internal/store"
)

func init() {
	caddy.RegisterModule(adminSessions{})
}

// adminSessions serves the session API on Caddy's admin endpoint:
// GET /oidc_auth/sessions?sub= lists a user's live sessions in every app
// this instance serves (in the shared store: on every instance), and POST
// /oidc_auth/sessions/revoke ends sessions by sub, sid or session ID.
type adminSessions struct{}

// CaddyModule returns the Caddy module information.
func (adminSessions) CaddyModule() caddy.ModuleInfo {
	return caddy.ModuleInfo{
		ID:  "admin.api.oidc_auth_sessions",
		New: func() caddy.Module { return new(adminSessions) },
	}
}

// Routes implements caddy.AdminRouter.
func (adminSessions) Routes() []caddy.AdminRoute {
	return []caddy.AdminRoute{
		{Pattern: "/oidc_auth/sessions", Handler: caddy.AdminHandlerFunc(serveSessionList)},
		{Pattern: "/oidc_auth/sessions/revoke", Handler: caddy.AdminHandlerFunc(serveSessionRevoke)},
	}
}

const maxAdminBody = 64 << 10

func apiError(status int, format string, args ...any) error {
	return caddy.APIError{HTTPStatus: status, Err: fmt.Errorf(format, args...)}
}

// eachApp calls f for every app (issuer, client ID and store) loaded here.
func eachApp(f func(a *appState) error) error {
	var errs []error
	apps.Range(func(_, v any) bool {
		if err := f(v.(*appState)); err != nil {
			errs = append(errs, err)
		}
		return true
	})
	return errors.Join(errs...)
}

func serveSessionList(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodGet {
		return apiError(http.StatusMethodNotAllowed, "method not allowed")
	}
	sub := r.URL.Query().Get("sub")
	if sub == "" {
		return apiError(http.StatusBadRequest, "the sub query parameter is required")
	}
	list := []store.SessionEntry{}
	err := eachApp(func(a *appState) error {
		got, err := a.store.Sessions(r.Context(), sub)
		list = append(list, a.live(got)...)
		return err
	})
	if err != nil {
		return apiError(http.StatusServiceUnavailable, "session registry: %v", err)
	}
	sort.Slice(list, func(i, j int) bool { return list[i].Created < list[j].Created })
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	return json.NewEncoder(w).Encode(map[string]any{"sub": sub, "sessions": list})
}

// revokeRequest names the sessions to end: exactly one of Sub, SID and
// Session. IdP asks the IdP (Scalekit's Management API) to end the user's
// sessions too.
type revokeRequest struct {
	Sub     string `json:"sub,omitempty"`
	SID     string `json:"sid,omitempty"`
	Session string `json:"session,omitempty"`
	IdP     bool   `json:"idp,omitempty"`
}

type revokeAnswer struct {
	Ended int `json:"ended"`
	// IdP: "revoked" when the IdP ended the user's sessions, else why not.
	IdP string `json:"idp,omitempty"`
}

func serveSessionRevoke(w http.ResponseWriter, r *http.Request) error {
	if r.Method != http.MethodPost {
		return apiError(http.StatusMethodNotAllowed, "method not allowed")
	}
	var req revokeRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxAdminBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return apiError(http.StatusBadRequest, "body must be a JSON object with one of sub, sid or session: %v", err)
	}
	n := 0
	for _, v := range []string{req.Sub, req.SID, req.Session} {
		if v != "" {
			n++
		}
	}
	if n != 1 {
		return apiError(http.StatusBadRequest, "give exactly one of sub, sid or session")
	}
	ans, err := revokeSessions(r.Context(), req, "admin")
	if err != nil {
		return apiError(http.StatusServiceUnavailable, "%v", err)
	}
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	return json.NewEncoder(w).Encode(ans)
}

// revokeSessions ends the sessions req names in every app loaded here;
// through a shared store, every instance enforces it within a second.
func revokeSessions(ctx context.Context, req revokeRequest, reason string) (revokeAnswer, error) {
	var ans revokeAnswer
	now := time.Now()
	subs := map[string]bool{}
	var mgmt *management
	err := eachApp(func(a *appState) error {
		if mg := a.mgmt.Load(); mg != nil && mgmt == nil {
			mgmt = mg
		}
		until := now.Add(a.lifetime()).Unix()
		var list []store.SessionEntry
		var rev store.Revocation
		var err error
		switch {
		case req.Sub != "":
			list, err = a.store.Sessions(ctx, req.Sub)
			rev = store.Revocation{Kind: store.RevokeSubject, Value: req.Sub, At: now.Unix(), Until: until}
			subs[req.Sub] = true
		case req.SID != "":
			list, err = a.store.SessionsOfSID(ctx, req.SID)
			rev = store.Revocation{Kind: store.RevokeSID, Value: req.SID, Until: until}
		default:
			var e store.SessionEntry
			var ok bool
			if e, ok, err = a.store.Session(ctx, req.Session); ok {
				list = []store.SessionEntry{e}
			} else if err == nil {
				return nil // not a session of this app
			}
			rev = store.Revocation{Kind: store.RevokeSession, Value: req.Session, Until: until}
		}
		if err != nil {
			return err
		}
		live := a.live(list)
		if err := a.store.Revoke(ctx, rev); err != nil {
			return err
		}
		for _, e := range live {
			subs[e.Subject] = true
		}
		ans.Ended += len(live)
		return a.store.ForgetSessions(ctx, list)
	})
	countSessionsEnded(reason, ans.Ended)
	if err != nil {
		return ans, err
	}
	if req.IdP {
		switch {
		case mgmt == nil:
			ans.IdP = "not asked: no handler has management_api"
		case len(subs) == 0:
			ans.IdP = "not asked: no user found"
		default:
			ans.IdP = "revoked"
			for sub := range subs {
				if err := mgmt.revokeUserSessions(ctx, sub); err != nil {
					ans.IdP = "failed: " + err.Error()
					break
				}
			}
		}
	}
	return ans, nil
}

// sessionsCommand is `caddy oidc-auth sessions list|revoke`, a client of
// the admin API.
func sessionsCommand() *cobra.Command {
	cmd := &cobra.Command{
		Use:   "sessions list|revoke",
		Short: "Lists or ends users' sessions through Caddy's admin endpoint",
	}
	address := func(c *cobra.Command) {
		c.Flags().String("address", "", "The address of Caddy's admin endpoint (default: from --config, or localhost:2019)")
		c.Flags().StringP("config", "c", "", "Configuration file naming the admin endpoint")
		c.Flags().StringP("adapter", "a", "", "Name of config adapter")
	}
	list := &cobra.Command{
		Use:   "list --sub <sub>",
		Short: "Lists a user's live sessions in every app",
		RunE: caddycmd.WrapCommandFuncForCobra(func(fl caddycmd.Flags) (int, error) {
			sub := fl.String("sub")
			if sub == "" {
				return caddy.ExitCodeFailedStartup, errors.New("--sub is required")
			}
			return adminCall(fl, http.MethodGet, "/oidc_auth/sessions?sub="+url.QueryEscape(sub), nil)
		}),
	}
	list.Flags().String("sub", "", "The user (the tokens' sub)")
	address(list)
	revoke := &cobra.Command{
		Use:   "revoke --sub <sub> | --sid <sid> | --session <id> [--idp]",
		Short: "Ends sessions everywhere: a user's, an IdP session's, or one",
		RunE: caddycmd.WrapCommandFuncForCobra(func(fl caddycmd.Flags) (int, error) {
			body, err := json.Marshal(revokeRequest{Sub: fl.String("sub"), SID: fl.String("sid"), Session: fl.String("session"), IdP: fl.Bool("idp")})
			if err != nil {
				return caddy.ExitCodeFailedStartup, err
			}
			return adminCall(fl, http.MethodPost, "/oidc_auth/sessions/revoke", body)
		}),
	}
	revoke.Flags().String("sub", "", "End every session of this user")
	revoke.Flags().String("sid", "", "End every session of this IdP session")
	revoke.Flags().String("session", "", "End this session (its ID, as listed)")
	revoke.Flags().Bool("idp", false, "Also end the user's sessions at the IdP (needs management_api)")
	address(revoke)
	cmd.AddCommand(list, revoke)
	return cmd
}

// adminCall sends one request to the admin endpoint and prints its answer.
func adminCall(fl caddycmd.Flags, method, uri string, body []byte) (int, error) {
	var cfg []byte
	if f := fl.String("config"); f != "" {
		var err error
		if cfg, _, _, err = caddycmd.LoadConfig(f, fl.String("adapter")); err != nil {
			return caddy.ExitCodeFailedStartup, err
		}
	}
	addr, err := caddycmd.DetermineAdminAPIAddress(fl.String("address"), cfg, fl.String("config"), fl.String("adapter"))
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	h := http.Header{}
	if body != nil {
		h.Set("Content-Type", "application/json")
	}
	resp, err := caddycmd.AdminAPIRequest(addr, method, uri, h, bytes.NewReader(body))
	if err != nil {
		return caddy.ExitCodeFailedStartup, err
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	var pretty bytes.Buffer
	if json.Indent(&pretty, out, "", "  ") == nil {
		out = pretty.Bytes()
	}
	fmt.Fprintln(os.Stdout, strings.TrimSpace(string(out)))
	return 0, nil
}

// Interface guard
var _ caddy.AdminRouter = adminSessions{}
