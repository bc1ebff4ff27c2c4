package oidcauth

import (
	"net/http"
	"runtime"
	"testing"
)

// Logins that are started and never finished (bots, closed tabs) keep
// nothing on the server: each attempt lives in its own state cookie. Ten
// thousand of them leave the heap where it was.
func TestAbortedLoginsKeepNoServerState(t *testing.T) {
	m := newUnitHandler(t, withOverrides)
	start := func(n int) {
		for i := range n {
			rec, _ := serve(t, m, navRequest(http.MethodGet, "/page"))
			if rec.Code != http.StatusFound {
				t.Fatalf("login %d: status %d, want 302", i, rec.Code)
			}
		}
	}
	heap := func() uint64 {
		runtime.GC()
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	start(200) // warm caches, pools and the logger
	before := heap()
	start(10_000)
	after := heap()
	// 10,000 attempts holding even 100 bytes each would be 1 MB.
	if after > before && after-before > 512<<10 {
		t.Errorf("heap grew by %d bytes over 10,000 aborted logins (from %d to %d)", after-before, before, after)
	}
}
