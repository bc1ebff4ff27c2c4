package cookie

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// Each login attempt has its own state cookie, so that parallel tabs do
// not overwrite each other; at most maxStateCookies are outstanding.
const maxStateCookies = 5

// StateLifetime is how long a login attempt's state cookie is accepted.
const StateLifetime = 10 * time.Minute

// LoginState is what a state cookie holds for one login attempt. The codec
// checks that State has at least 12 characters and that the attempt is at
// most StateLifetime old; the rest is the caller's.
type LoginState struct {
	State    string `json:"s"`
	Nonce    string `json:"n"`
	Verifier string `json:"v"`
	ReturnTo string `json:"r"`
	Created  int64  `json:"c"`
	Post     bool   `json:"p,omitempty"` // a form post waits in the browser to be re-sent
	// The acr_values and max_age (seconds) the authorization request
	// asked for, which the ID token must then satisfy.
	ACRValues string `json:"a,omitempty"`
	MaxAge    int64  `json:"x,omitempty"`
}

func (c *Codec) statePrefix(r *http.Request) string {
	return cookieName(r, c.name+"_s_", "/")
}

// StateCookieName names the state cookie of one login attempt after the
// start of its state value (at least 12 characters), so the callback finds
// it without trying all.
func (c *Codec) StateCookieName(r *http.Request, state string) string {
	return c.statePrefix(r) + state[:12]
}

// WriteState stores a new login attempt; st.State must have at least 12
// characters. When maxStateCookies attempts are already outstanding, the
// oldest (and any that do not decrypt or have expired at now) are expired,
// so abandoned logins cannot grow the request headers.
func (c *Codec) WriteState(w http.ResponseWriter, r *http.Request, st *LoginState, now time.Time) error {
	prefix := c.statePrefix(r)
	type outstanding struct {
		name    string
		created int64
	}
	var live []outstanding
	for _, ck := range r.Cookies() {
		if !strings.HasPrefix(ck.Name, prefix) {
			continue
		}
		old, err := c.decodeState(ck.Value, now)
		if err != nil {
			http.SetCookie(w, newCookie(r, ck.Name, "/", "", -1))
			continue
		}
		live = append(live, outstanding{ck.Name, old.Created})
	}
	for len(live) >= maxStateCookies {
		oldest := 0
		for i := range live {
			if live[i].created < live[oldest].created {
				oldest = i
			}
		}
		http.SetCookie(w, newCookie(r, live[oldest].name, "/", "", -1))
		live = append(live[:oldest], live[oldest+1:]...)
	}
	plain, err := json.Marshal(st)
	if err != nil {
		return err
	}
	http.SetCookie(w, newCookie(r, c.StateCookieName(r, st.State), "/", c.Seal(PurposeState, plain), int(StateLifetime/time.Second)))
	return nil
}

func (c *Codec) decodeState(value string, now time.Time) (*LoginState, error) {
	plain, err := c.Open(PurposeState, value)
	if err != nil {
		return nil, err
	}
	st := new(LoginState)
	if err := json.Unmarshal(plain, st); err != nil || len(st.State) < 12 {
		return nil, ErrInvalid
	}
	if now.Sub(time.Unix(st.Created, 0)) > StateLifetime {
		return nil, errors.New("login attempt expired")
	}
	return st, nil
}

// TakeState finds, checks and expires the state cookie matching state: it
// must open, be at most StateLifetime old at now and hold exactly state
// (compared in constant time). The errors are meant for the user.
func (c *Codec) TakeState(w http.ResponseWriter, r *http.Request, state string, now time.Time) (*LoginState, error) {
	if len(state) < 12 || len(state) > 256 {
		return nil, errors.New("missing or malformed state parameter")
	}
	name := c.StateCookieName(r, state)
	ck, err := r.Cookie(name)
	if err != nil {
		return nil, errors.New("no login in progress for this state (expired, already used, or started in another browser)")
	}
	http.SetCookie(w, newCookie(r, name, "/", "", -1))
	st, err := c.decodeState(ck.Value, now)
	if err != nil {
		return nil, err
	}
	if !constantTimeEqual(st.State, state) {
		return nil, errors.New("state does not match the login in progress")
	}
	return st, nil
}

// PeekState returns the login attempt for state, checked as TakeState
// does, without expiring it (for the error page's retry link), or nil.
func (c *Codec) PeekState(r *http.Request, state string, now time.Time) *LoginState {
	if len(state) < 12 || len(state) > 256 {
		return nil
	}
	ck, err := r.Cookie(c.StateCookieName(r, state))
	if err != nil {
		return nil
	}
	st, err := c.decodeState(ck.Value, now)
	if err != nil || !constantTimeEqual(st.State, state) {
		return nil
	}
	return st
}

// ClearStates expires every outstanding login attempt of this app.
func (c *Codec) ClearStates(w http.ResponseWriter, r *http.Request) {
	prefix := c.statePrefix(r)
	for _, ck := range r.Cookies() {
		if strings.HasPrefix(ck.Name, prefix) {
			http.SetCookie(w, newCookie(r, ck.Name, "/", "", -1))
		}
	}
}

// A login that completes but whose session does not hold (cookies refused
// by the browser or a proxy, tokens the IdP keeps issuing wrong) would send
// the browser round the IdP forever. The loop cookie counts logins that
// start within loginLoopWindow of a completed one; the MaxLoginLoop-th in
// a row is a loop. It holds a count, nothing secret.
const (
	// MaxLoginLoop is how many logins in a row, each started soon after a
	// completed one, make a loop.
	MaxLoginLoop    = 3
	loginLoopWindow = time.Minute
)

func (c *Codec) loopCookieName(r *http.Request) string {
	return cookieName(r, c.name+"_lg", "/")
}

// MarkLogin notes a completed login, keeping the count of any loop.
func (c *Codec) MarkLogin(w http.ResponseWriter, r *http.Request) {
	n := 0
	if ck, err := r.Cookie(c.loopCookieName(r)); err == nil {
		n, _ = strconv.Atoi(ck.Value)
	}
	http.SetCookie(w, newCookie(r, c.loopCookieName(r), "/", strconv.Itoa(max(n, 0)), int(loginLoopWindow/time.Second)))
}

// LoginLoop counts a login that starts soon after a completed one, and
// reports (and resets) a loop once MaxLoginLoop of them happened in a row.
func (c *Codec) LoginLoop(w http.ResponseWriter, r *http.Request) bool {
	ck, err := r.Cookie(c.loopCookieName(r))
	if err != nil {
		return false
	}
	n, _ := strconv.Atoi(ck.Value)
	n = max(n, 0) + 1
	if n >= MaxLoginLoop {
		http.SetCookie(w, newCookie(r, c.loopCookieName(r), "/", "", -1))
		return true
	}
	http.SetCookie(w, newCookie(r, c.loopCookieName(r), "/", strconv.Itoa(n), int(loginLoopWindow/time.Second)))
	return false
}

// EndLoginLoop expires the loop cookie once a session holds, so it rides
// on no more requests.
func (c *Codec) EndLoginLoop(w http.ResponseWriter, r *http.Request) {
	// Most requests have no such cookie: look for it without parsing.
	if !c.hasLoopCookie(r.Header) {
		return
	}
	c.ClearLoginLoop(w, r)
}

// ClearLoginLoop expires the loop cookie when the request carries it.
func (c *Codec) ClearLoginLoop(w http.ResponseWriter, r *http.Request) {
	name := c.loopCookieName(r)
	if _, err := r.Cookie(name); err == nil {
		http.SetCookie(w, newCookie(r, name, "/", "", -1))
	}
}
