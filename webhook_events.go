package oidcauth

import (
	"encoding/json"
	"net/http"

	"go.uber.org/zap"

	"github.com/caddy-oidc-auth/oidcauth/internal/store"
)

// Scalekit's organization membership events. Their names are those of
// Scalekit's webhook reference for user events ("OrgMembershipEvent"
// objects); the reference available here shows the payload shape (data.user
// with its id and membership, data.organization.id) for user.signup, and
// the membership events are read the same way. Role changes arrive as a
// membership update (the membership's roles).
const (
	eventMembershipDeleted = "user.organization_membership_deleted"
	eventMembershipUpdated = "user.organization_membership_updated"
)

// orgEvent is the part of a membership event the handler reads.
type orgEvent struct {
	Data struct {
		Organization struct {
			ID string `json:"id"`
		} `json:"organization"`
		User struct {
			ID         string `json:"id"`
			Membership struct {
				OrganizationID string `json:"organization_id"`
			} `json:"membership"`
		} `json:"user"`
	} `json:"data"`
}

// handleOrgEvent acts on a signed webhook event other than user.logout:
// a deleted membership ends the user's sessions in that organization (those
// whose tokens' oid names it); an updated membership (new roles) makes
// every session of the user refresh its tokens on its next request, on
// every instance. Other events are acknowledged and ignored.
func (m *OIDCAuth) handleOrgEvent(w http.ResponseWriter, r *http.Request, id, typ string, body []byte) error {
	if typ != eventMembershipDeleted && typ != eventMembershipUpdated {
		w.WriteHeader(http.StatusNoContent) // signed, but not for us
		return nil
	}
	var ev orgEvent
	if err := json.Unmarshal(body, &ev); err != nil || ev.Data.User.ID == "" {
		return backchannelError(w, http.StatusBadRequest, "invalid_request", typ+" event without data.user.id")
	}
	sub := ev.Data.User.ID
	org := firstNonEmpty(ev.Data.User.Membership.OrganizationID, ev.Data.Organization.ID)
	if typ == eventMembershipDeleted && org == "" {
		return backchannelError(w, http.StatusBadRequest, "invalid_request", typ+" event without an organization id")
	}
	// Delivered at least once: a replayed id is acknowledged only.
	fresh, err := m.app.store.ClaimOnce(r.Context(), "webhook:"+id, m.now().Add(2*webhookTolerance))
	if err != nil {
		return backchannelError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "cannot record the event now")
	}
	if !fresh {
		w.WriteHeader(http.StatusNoContent)
		return nil
	}
	if m.mgmt != nil {
		m.mgmt.forget(sub)
	}
	now := m.now()
	ended := 0
	err = eachAppOf(m, func(a *appState) error {
		if typ == eventMembershipUpdated {
			return a.store.Revoke(r.Context(), store.Revocation{Kind: store.RefreshSubject, Value: sub, At: now.Unix(), Until: now.Add(a.lifetime()).Unix()})
		}
		list, err := a.store.Sessions(r.Context(), sub)
		if err != nil {
			return err
		}
		var inOrg []store.SessionEntry
		for _, e := range a.live(list) {
			if e.OID == org {
				inOrg = append(inOrg, e)
				if err := a.store.Revoke(r.Context(), store.Revocation{Kind: store.RevokeSession, Value: e.ID, Until: e.Until}); err != nil {
					return err
				}
			}
		}
		ended += len(inOrg)
		return a.store.ForgetSessions(r.Context(), inOrg)
	})
	countSessionsEnded("webhook", ended)
	if err != nil {
		m.app.store.ReleaseOnce(r.Context(), "webhook:"+id)
		m.logger.Error("webhook event not recorded", zap.String("type", typ), zap.Error(err))
		return backchannelError(w, http.StatusServiceUnavailable, "temporarily_unavailable", "cannot record the event now")
	}
	m.logger.Info("webhook event", zap.String("type", typ), zap.String("sub", sub), zap.String("org", org), zap.Int("sessions_ended", ended))
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// eachAppOf calls f for every app loaded here, or for m's own app when it
// is not pooled (a handler used on its own).
func eachAppOf(m *OIDCAuth, f func(a *appState) error) error {
	seen := false
	err := eachApp(func(a *appState) error {
		if a == m.app {
			seen = true
		}
		return f(a)
	})
	if !seen && err == nil {
		err = f(m.app)
	}
	return err
}

// forget drops a user's cached memberships, so the next lookup sees a
// change the IdP announced.
func (mg *management) forget(sub string) {
	mg.mu.Lock()
	delete(mg.users, sub)
	mg.mu.Unlock()
}
