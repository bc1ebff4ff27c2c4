package oidcauth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// Scalekit webhooks, signed the Standard Webhooks way.

var testWebhookKey = []byte("webhook-test-key-0123456789abcdef")

func testWebhookSecret(key []byte) string {
	return "whsec_" + base64.StdEncoding.EncodeToString(key)
}

// webhookHandler is a handler with webhook_secret set and a clock that the
// test controls.
func webhookHandler(t *testing.T, now time.Time) *OIDCAuth {
	t.Helper()
	return newUnitHandler(t, func(m *OIDCAuth) {
		m.WebhookSecret = testWebhookSecret(testWebhookKey)
		m.now = func() time.Time { return now }
	})
}

func webhookSignature(key []byte, id, ts string, body string) string {
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + ts + "." + body))
	return "v1," + base64.StdEncoding.EncodeToString(mac.Sum(nil))
}

// webhookDelivery is one POST to the webhook path; empty header values are
// left out.
type webhookDelivery struct {
	id, timestamp, signature, body string
}

// signedDelivery signs body with key at ts.
func signedDelivery(key []byte, id string, ts time.Time, body string) webhookDelivery {
	stamp := strconv.FormatInt(ts.Unix(), 10)
	return webhookDelivery{id: id, timestamp: stamp, signature: webhookSignature(key, id, stamp, body), body: body}
}

func (d webhookDelivery) request() *http.Request {
	r := newRequest(http.MethodPost, "/auth/webhook", "Content-Type", "application/json")
	r.Body = httpBody(d.body)
	r.ContentLength = int64(len(d.body))
	for name, v := range map[string]string{"webhook-id": d.id, "webhook-timestamp": d.timestamp, "webhook-signature": d.signature} {
		if v != "" {
			r.Header.Set(name, v)
		}
	}
	return r
}

func httpBody(s string) *readCloser { return &readCloser{strings.NewReader(s)} }

type readCloser struct{ *strings.Reader }

func (readCloser) Close() error { return nil }

func logoutEvent(sid string) string {
	return fmt.Sprintf(`{"spec_version":"1","id":"evt_%s","type":"user.logout","occurred_at":"2025-01-01T00:00:00Z","environment_id":"env_1","object":"UserSession","data":{"user_session":{"session_id":%q,"user_id":"usr_1"}}}`, sid, sid)
}

func sessionWithSID(now time.Time, sid string) *session {
	s := unitSession(now)
	s.SID = sid
	return s
}

// apiWith is an API request that carries s's cookie.
func apiWith(t *testing.T, m *OIDCAuth, s *session) *http.Request {
	t.Helper()
	r := apiRequest(http.MethodGet, "/api/items")
	addSession(t, m, r, s)
	return r
}

func TestWebhookUserLogoutEndsSession(t *testing.T) {
	now := time.Now()
	m := webhookHandler(t, now)
	target, other := sessionWithSID(now, "ses_target"), sessionWithSID(now, "ses_other")
	if rec, next := serve(t, m, apiWith(t, m, target)); rec.Code != http.StatusTeapot || !next.called {
		t.Fatalf("before the webhook the session does not work: %d", rec.Code)
	}

	rec, next := serve(t, m, signedDelivery(testWebhookKey, "msg_1", now, logoutEvent("ses_target")).request())
	if rec.Code != http.StatusNoContent || next.called {
		t.Fatalf("signed user.logout: status %d (next called %v), want 204; body %q", rec.Code, next.called, rec.Body.String())
	}
	if cc := rec.Header().Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control = %q, want no-store", cc)
	}
	if !m.app.revoked(target) {
		t.Fatal("the session named by the webhook is not revoked")
	}
	if m.app.revoked(other) {
		t.Error("a session with another sid was revoked")
	}
	if rec, next := serve(t, m, apiWith(t, m, target)); rec.Code != http.StatusUnauthorized || next.called {
		t.Errorf("the old cookie after the webhook: status %d, want 401", rec.Code)
	}
	if rec, next := serve(t, m, apiWith(t, m, other)); rec.Code != http.StatusTeapot || !next.called {
		t.Errorf("another session after the webhook: status %d, want it served", rec.Code)
	}
}

func TestWebhookSeveralSignatures(t *testing.T) {
	// Standard Webhooks: space-separated signatures, any valid v1 one counts
	// (that is how a secret is rotated).
	now := time.Now()
	m := webhookHandler(t, now)
	d := signedDelivery(testWebhookKey, "msg_multi", now, logoutEvent("ses_multi"))
	d.signature = webhookSignature([]byte("an-older-key-0123456789abcdefgh"), d.id, d.timestamp, d.body) + " v2,ignored " + d.signature
	if rec, _ := serve(t, m, d.request()); rec.Code != http.StatusNoContent {
		t.Fatalf("status %d, want 204; body %q", rec.Code, rec.Body.String())
	}
	if !m.app.revoked(sessionWithSID(now, "ses_multi")) {
		t.Error("not revoked")
	}
}

func TestWebhookRefusals(t *testing.T) {
	now := time.Now()
	const sid = "ses_refused"
	body := logoutEvent(sid)
	good := func() webhookDelivery { return signedDelivery(testWebhookKey, "msg_r", now, body) }
	cases := map[string]func() webhookDelivery{
		"body changed after signing": func() webhookDelivery {
			d := good()
			d.body = strings.Replace(d.body, sid, sid+"x", 1)
			return d
		},
		"signature of another id": func() webhookDelivery {
			d := good()
			d.id = "msg_other"
			return d
		},
		"signature of another timestamp": func() webhookDelivery {
			d := good()
			d.timestamp = strconv.FormatInt(now.Unix()-1, 10)
			return d
		},
		"wrong secret": func() webhookDelivery {
			return signedDelivery([]byte("not-the-webhook-key-0123456789ab"), "msg_r", now, body)
		},
		"timestamp older than 5 minutes": func() webhookDelivery {
			return signedDelivery(testWebhookKey, "msg_r", now.Add(-5*time.Minute-time.Second), body)
		},
		"timestamp more than 5 minutes ahead": func() webhookDelivery {
			return signedDelivery(testWebhookKey, "msg_r", now.Add(5*time.Minute+time.Second), body)
		},
		"timestamp in milliseconds": func() webhookDelivery {
			d := good()
			d.timestamp = strconv.FormatInt(now.UnixMilli(), 10)
			d.signature = webhookSignature(testWebhookKey, d.id, d.timestamp, d.body)
			return d
		},
		"malformed timestamp": func() webhookDelivery {
			d := good()
			d.timestamp = "yesterday"
			d.signature = webhookSignature(testWebhookKey, d.id, d.timestamp, d.body)
			return d
		},
		"missing webhook-id": func() webhookDelivery {
			d := good()
			d.id = ""
			return d
		},
		"missing webhook-timestamp": func() webhookDelivery {
			d := good()
			d.timestamp = ""
			return d
		},
		"unsigned (no webhook-signature)": func() webhookDelivery {
			d := good()
			d.signature = ""
			return d
		},
		"signature without a version": func() webhookDelivery {
			d := good()
			d.signature = strings.TrimPrefix(d.signature, "v1,")
			return d
		},
		"signature of another version": func() webhookDelivery {
			d := good()
			d.signature = "v1a," + strings.TrimPrefix(d.signature, "v1,")
			return d
		},
		"empty v1 signature": func() webhookDelivery {
			d := good()
			d.signature = "v1,"
			return d
		},
		"truncated signature": func() webhookDelivery {
			d := good()
			d.signature = d.signature[:len(d.signature)-8]
			return d
		},
		"signed with the whsec_ string instead of its key": func() webhookDelivery {
			return signedDelivery([]byte(testWebhookSecret(testWebhookKey)), "msg_r", now, body)
		},
	}
	for name, delivery := range cases {
		t.Run(name, func(t *testing.T) {
			m := webhookHandler(t, now)
			rec, next := serve(t, m, delivery().request())
			if rec.Code != http.StatusUnauthorized || next.called {
				t.Errorf("status %d (next called %v), want 401; body %q", rec.Code, next.called, rec.Body.String())
			}
			if b := jsonBody(t, rec); b["error"] == "" {
				t.Errorf("401 without an error code: %v", b)
			}
			if m.app.revoked(sessionWithSID(now, sid)) || m.app.revoked(sessionWithSID(now, sid+"x")) {
				t.Error("a refused webhook ended a session")
			}
			// The id was not used up: the genuine delivery still works.
			if rec, _ := serve(t, m, good().request()); rec.Code != http.StatusNoContent {
				t.Errorf("the genuine delivery after the refused one: %d", rec.Code)
			}
		})
	}
}

func TestWebhookTimestampTolerance(t *testing.T) {
	now := time.Now()
	for _, skew := range []time.Duration{-5*time.Minute + time.Second, 5*time.Minute - time.Second, 0} {
		m := webhookHandler(t, now)
		sid := "ses_skew_" + skew.String()
		if rec, _ := serve(t, m, signedDelivery(testWebhookKey, "msg_"+sid, now.Add(skew), logoutEvent(sid)).request()); rec.Code != http.StatusNoContent {
			t.Errorf("timestamp %s from now: status %d, want 204", skew, rec.Code)
		}
	}
}

func TestWebhookReplayActsOnce(t *testing.T) {
	now := time.Now()
	m := webhookHandler(t, now)
	if rec, _ := serve(t, m, signedDelivery(testWebhookKey, "msg_once", now, logoutEvent("ses_first")).request()); rec.Code != http.StatusNoContent {
		t.Fatalf("first delivery: %d", rec.Code)
	}
	// A redelivery (same webhook-id) is acknowledged, so the sender stops
	// retrying, but not acted on: here it names another session, which stays.
	rec, _ := serve(t, m, signedDelivery(testWebhookKey, "msg_once", now.Add(time.Second), logoutEvent("ses_second")).request())
	if rec.Code != http.StatusNoContent {
		t.Errorf("replayed webhook-id: status %d, want 204", rec.Code)
	}
	if m.app.revoked(sessionWithSID(now, "ses_second")) {
		t.Error("a replayed webhook-id was acted on")
	}
	if !m.app.revoked(sessionWithSID(now, "ses_first")) {
		t.Error("the first delivery's logout is gone")
	}

	// Concurrent redeliveries: exactly one is acted on.
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			d := signedDelivery(testWebhookKey, "msg_race", now, logoutEvent(fmt.Sprintf("ses_race_%d", i)))
			rec := httptest.NewRecorder()
			_ = m.ServeHTTP(rec, d.request(), new(nextHandler).handler())
			if rec.Code != http.StatusNoContent {
				t.Errorf("concurrent delivery %d: %d", i, rec.Code)
			}
		}()
	}
	wg.Wait()
	acted := 0
	for i := range 8 {
		if m.app.revoked(sessionWithSID(now, fmt.Sprintf("ses_race_%d", i))) {
			acted++
		}
	}
	if acted != 1 {
		t.Errorf("%d of 8 concurrent deliveries of one webhook-id were acted on, want 1", acted)
	}
}

func TestWebhookOtherEvents(t *testing.T) {
	now := time.Now()
	for _, typ := range []string{"user.login", "organization.created", "user.logout.v2", "USER.LOGOUT", ""} {
		t.Run(typ, func(t *testing.T) {
			m := webhookHandler(t, now)
			body := strings.Replace(logoutEvent("ses_other_event"), `"type":"user.logout"`, fmt.Sprintf(`"type":%q`, typ), 1)
			rec, next := serve(t, m, signedDelivery(testWebhookKey, "msg_evt", now, body).request())
			if rec.Code != http.StatusNoContent || next.called {
				t.Errorf("event %q: status %d, want 204", typ, rec.Code)
			}
			if m.app.revoked(sessionWithSID(now, "ses_other_event")) {
				t.Errorf("event %q ended a session", typ)
			}
		})
	}
}

func TestWebhookMalformedEvents(t *testing.T) {
	now := time.Now()
	for name, body := range map[string]string{
		"not JSON":                 `user.logout ses_1`,
		"logout without a session": `{"type":"user.logout","data":{}}`,
		"empty session id":         `{"type":"user.logout","data":{"user_session":{"session_id":""}}}`,
	} {
		t.Run(name, func(t *testing.T) {
			m := webhookHandler(t, now)
			rec, _ := serve(t, m, signedDelivery(testWebhookKey, "msg_bad", now, body).request())
			if rec.Code != http.StatusBadRequest {
				t.Errorf("status %d, want 400; body %q", rec.Code, rec.Body.String())
			}
		})
	}
	t.Run("body over the limit", func(t *testing.T) {
		m := webhookHandler(t, now)
		body := `{"type":"user.logout","pad":"` + strings.Repeat("x", maxWebhookBody) + `"}`
		rec, _ := serve(t, m, signedDelivery(testWebhookKey, "msg_big", now, body).request())
		if rec.Code != http.StatusBadRequest {
			t.Errorf("status %d, want 400", rec.Code)
		}
	})
}

func TestWebhookMethodAndDisabled(t *testing.T) {
	now := time.Now()
	m := webhookHandler(t, now)
	rec, next := serve(t, m, navRequest(http.MethodGet, "/auth/webhook"))
	if rec.Code != http.StatusMethodNotAllowed || next.called || rec.Header().Get("Allow") != "POST" {
		t.Errorf("GET: status %d Allow %q, want 405 POST", rec.Code, rec.Header().Get("Allow"))
	}

	// Without webhook_secret the path is not there, however well signed.
	off := newUnitHandler(t, func(m *OIDCAuth) { m.now = func() time.Time { return now } })
	rec, next = serve(t, off, signedDelivery(testWebhookKey, "msg_off", now, logoutEvent("ses_off")).request())
	if rec.Code != http.StatusNotFound || next.called {
		t.Errorf("without webhook_secret: status %d (next called %v), want 404", rec.Code, next.called)
	}
	if off.app.revoked(sessionWithSID(now, "ses_off")) {
		t.Error("a webhook ended a session although webhooks are off")
	}

	// A moved webhook_path answers there, and the default path is then an
	// ordinary protected path.
	moved := newUnitHandler(t, func(m *OIDCAuth) {
		m.WebhookSecret = testWebhookSecret(testWebhookKey)
		m.WebhookPath = "/hooks/scalekit"
		m.now = func() time.Time { return now }
	})
	r := signedDelivery(testWebhookKey, "msg_moved", now, logoutEvent("ses_moved")).request()
	r.URL.Path = "/hooks/scalekit"
	if rec, _ := serve(t, moved, r); rec.Code != http.StatusNoContent {
		t.Errorf("moved webhook_path: status %d, want 204", rec.Code)
	}
	if rec, _ := serve(t, moved, signedDelivery(testWebhookKey, "msg_moved2", now, logoutEvent("ses_moved2")).request()); rec.Code != http.StatusUnauthorized {
		t.Errorf("the default path after webhook_path moved: status %d, want the ordinary 401", rec.Code)
	}
	if moved.app.revoked(sessionWithSID(now, "ses_moved2")) {
		t.Error("the default path acted on a webhook after webhook_path moved")
	}
}

func TestWebhookSecretConfig(t *testing.T) {
	for _, c := range []struct {
		secret string
		ok     bool
	}{
		{testWebhookSecret(testWebhookKey), true},
		{testWebhookSecret([]byte("sixteen-byte-key")), true},
		{testWebhookSecret([]byte("fifteen-byte-ke")), false},
		{"whsec_not base64!", false},
		{"whsec_", false},
	} {
		m := &OIDCAuth{Issuer: unreachableIssuer, ClientID: "a", ClientSecret: "b", CookieSecret: testCookieSecret, WebhookSecret: c.secret}
		err := m.configure()
		if c.ok && err != nil {
			t.Errorf("%q: %v", c.secret, err)
		}
		if !c.ok && (err == nil || !strings.Contains(err.Error(), "webhook_secret")) {
			t.Errorf("%q: error %v, want one naming webhook_secret", c.secret, err)
		}
	}
}
