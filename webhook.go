package oidcauth

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/caddy-oidc-auth/oidcauth/internal/store"
)

const (
	maxWebhookBody   = 256 << 10
	webhookTolerance = 5 * time.Minute
)

// handleWebhook receives Scalekit's webhooks (Standard Webhooks signing:
// webhook-id, webhook-timestamp and webhook-signature headers, HMAC-SHA256
// with the whsec_ secret) and ends the session named by a user.logout
// event, through the same revocation path as back-channel logout. It
// answers 404 unless webhook_secret is configured.
func (m *OIDCAuth) handleWebhook(w http.ResponseWriter, r *http.Request) error {
	if m.webhookKey == nil {
		return m.answer.fail(w, r, http.StatusNotFound, "Not found.", "")
	}
	w.Header().Set("Cache-Control", "no-store")
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		return backchannelError(w, http.StatusMethodNotAllowed, "invalid_request", "use POST")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxWebhookBody+1))
	if err != nil || len(body) > maxWebhookBody {
		return backchannelError(w, http.StatusBadRequest, "invalid_request", "unreadable or too large body")
	}
	id := r.Header.Get("webhook-id")
	if err := verifyWebhook(m.webhookKey, m.now(), id, r.Header.Get("webhook-timestamp"), r.Header.Get("webhook-signature"), body); err != nil {
		m.logger.Warn("webhook refused", zap.String("reason", err.Error()))
		countLogout("webhook", "refused", "signature")
		return backchannelError(w, http.StatusUnauthorized, "invalid_signature", err.Error())
	}

	var event struct {
		Type string `json:"type"`
		Data struct {
			UserSession struct {
				SessionID string `json:"session_id"`
			} `json:"user_session"`
		} `json:"data"`
	}
	if err := json.Unmarshal(body, &event); err != nil {
		return backchannelError(w, http.StatusBadRequest, "invalid_request", "body is not a JSON event")
	}
	if event.Type != "user.logout" {
		return m.handleOrgEvent(w, r, id, event.Type, body)
	}
	sid := event.Data.UserSession.SessionID
	if sid == "" {
		return backchannelError(w, http.StatusBadRequest, "invalid_request", "user.logout event without data.user_session.session_id")
	}
	// Standard Webhooks deliver at least once: a replayed id is
	// acknowledged without acting twice.
	fresh, err := m.app.store.ClaimOnce(r.Context(), "webhook:"+id, m.now().Add(2*webhookTolerance))
	if err != nil {
		return backchannelError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "cannot record the event now")
	}
	if !fresh {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	rev := store.Revocation{Kind: store.RevokeSID, Value: sid, Until: m.now().Add(m.sessionLifetime).Unix()}
	if err := m.app.store.Revoke(r.Context(), rev); err != nil {
		m.app.store.ReleaseOnce(r.Context(), "webhook:"+id)
		m.logger.Error("webhook logout not recorded", zap.Error(err))
		return backchannelError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "cannot record the logout now")
	}
	m.logger.Info("webhook logout", zap.String("sid", sid))
	countLogout("webhook", "accepted", "")
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// verifyWebhook checks a Standard Webhooks signature: the timestamp within
// the tolerance, and one of the v1 signatures equal to the HMAC-SHA256 of
// "<id>.<timestamp>.<body>".
func verifyWebhook(key []byte, now time.Time, id, timestamp, signatures string, body []byte) error {
	if id == "" || timestamp == "" || signatures == "" {
		return errors.New("missing webhook-id, webhook-timestamp or webhook-signature")
	}
	ts, err := strconv.ParseInt(timestamp, 10, 64)
	if err != nil {
		return errors.New("malformed webhook-timestamp")
	}
	if d := now.Sub(time.Unix(ts, 0)); d > webhookTolerance || d < -webhookTolerance {
		return fmt.Errorf("webhook-timestamp is %s away from now", d.Round(time.Second))
	}
	mac := hmac.New(sha256.New, key)
	mac.Write([]byte(id + "." + timestamp + "."))
	mac.Write(body)
	want := mac.Sum(nil)
	for _, sig := range strings.Fields(signatures) {
		version, value, ok := strings.Cut(sig, ",")
		if !ok || version != "v1" {
			continue
		}
		got, err := base64.StdEncoding.DecodeString(value)
		if err == nil && hmac.Equal(got, want) {
			return nil
		}
	}
	return errors.New("no valid v1 signature")
}

// parseWebhookSecret decodes a whsec_ secret into its HMAC key.
func parseWebhookSecret(secret string) ([]byte, error) {
	raw := strings.TrimPrefix(secret, "whsec_")
	key, err := base64.StdEncoding.DecodeString(raw)
	if err != nil || len(key) < 16 {
		return nil, errors.New("webhook_secret: must be a whsec_ secret (base64 after the prefix, at least 16 bytes)")
	}
	return key, nil
}
