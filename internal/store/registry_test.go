package store

import (
	"context"
	"strconv"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/caddy-oidc-auth/oidcauth/internal/store/storetest"
)

// redisForTest runs a redis-server for one test and returns its URL.
func redisForTest(t *testing.T) string { return storetest.Redis(t) }

// TestSessionRegistry: both backends record, list (per user and per IdP
// session), touch and forget sessions; expired sessions are not listed;
// a user's records stay at MaxSessionsPerUser, the newest kept.
func TestSessionRegistry(t *testing.T) {
	for _, kind := range []string{"storage", "redis", "redis-cluster"} {
		t.Run(kind, func(t *testing.T) {
			now := time.Unix(time.Now().Unix(), 0)
			var b Backend = Embedded(&certmagic.FileStorage{Path: t.TempDir()}, "test")
			if kind != "storage" {
				url := ""
				if kind == "redis" {
					url = redisForTest(t)
				} else {
					url = startRedisCluster(t)
				}
				var err error
				if b, err = Redis(url, "test", RedisOptions{}); err != nil {
					t.Fatal(err)
				}
			}
			st, err := New(context.Background(), b, Options{Now: func() time.Time { return now }})
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			ctx := context.Background()
			rec := func(id, sub, sid string, until int64) {
				t.Helper()
				if err := st.RecordSession(ctx, SessionEntry{ID: id, App: "app", Subject: sub, SID: sid, Created: now.Unix(), Until: until, UserAgent: "agent"}); err != nil {
					t.Fatal(err)
				}
			}
			end := now.Add(time.Hour).Unix()
			rec("a1", "alice", "sid-1", end)
			rec("a2", "alice", "sid-2", end)
			rec("a3", "alice", "sid-1", end)
			rec("b1", "bob", "sid-3", end)
			rec("gone", "alice", "", now.Unix()-1) // already over

			list, err := st.Sessions(ctx, "alice")
			if err != nil || len(list) != 3 {
				t.Fatalf("alice's sessions: %v, %v; want a1, a2, a3", list, err)
			}
			bySID, _ := st.SessionsOfSID(ctx, "sid-1")
			if len(bySID) != 2 {
				t.Fatalf("sessions of sid-1: %v; want a1 and a3", bySID)
			}
			if err := st.TouchSession(ctx, "a2", now.Unix()+90); err != nil {
				t.Fatal(err)
			}
			if e, ok, _ := st.Session(ctx, "a2"); !ok || e.LastSeen != now.Unix()+90 || e.UserAgent != "agent" || e.App != "app" {
				t.Fatalf("a2 after touch: %+v %v", e, ok)
			}
			_ = st.TouchSession(ctx, "nobody", now.Unix())
			if _, ok, _ := st.Session(ctx, "nobody"); ok {
				t.Fatal("touching an unknown session recorded it")
			}
			if err := st.ForgetSessions(ctx, bySID); err != nil {
				t.Fatal(err)
			}
			if list, _ := st.Sessions(ctx, "alice"); len(list) != 1 || list[0].ID != "a2" {
				t.Fatalf("after forgetting sid-1: %v; want a2 only", list)
			}

			// A login flood of one user keeps the newest MaxSessionsPerUser.
			for i := range MaxSessionsPerUser + 30 {
				rec("c"+strconv.Itoa(i), "carol", "", end+int64(i))
			}
			list, _ = st.Sessions(ctx, "carol")
			if len(list) != MaxSessionsPerUser {
				t.Fatalf("carol has %d records, want the cap %d", len(list), MaxSessionsPerUser)
			}
			if _, ok, _ := st.Session(ctx, "c"+strconv.Itoa(MaxSessionsPerUser+29)); !ok {
				t.Fatal("the newest session lost its record")
			}
			if _, ok, _ := st.Session(ctx, "c0"); ok {
				t.Fatal("the oldest session kept its record past the cap")
			}
		})
	}
}

// TestSessionRegistryBoundedOverall: a flood of logins of distinct users
// keeps the embedded registry, and its queue of IDs, at the overall cap.
func TestSessionRegistryBoundedOverall(t *testing.T) {
	r := newMemRegistry(1000, 5)
	now := int64(1_800_000_000)
	for i := range 50_000 {
		r.record(SessionEntry{ID: "s" + strconv.Itoa(i), Subject: "u" + strconv.Itoa(i%3000), Until: now + 3600}, now)
		if n := r.len(); n > 1000 || len(r.order) > 2*1000+1 {
			t.Fatalf("after %d logins: %d records, %d queued", i+1, n, len(r.order))
		}
	}
	if _, ok := r.get("s49999", now); !ok {
		t.Fatal("the newest session lost its record")
	}
	if len(r.bySub) > 1000 {
		t.Fatalf("%d users indexed for 1000 records", len(r.bySub))
	}
}
