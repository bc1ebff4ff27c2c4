// Package storetest helps tests of the store's users: it runs a real
// redis-server for a test and makes the certificates of a TLS one. It is
// for tests only.
package storetest

import (
	"context"
	"net"
	"os/exec"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Redis runs a redis-server on a free loopback port for one test, stopped
// when the test ends, and returns its URL (redis://127.0.0.1:<port>/0).
// The test is skipped where redis-server is not installed
// (scripts/setup.sh installs it).
func Redis(t testing.TB) string {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed (scripts/setup.sh installs it)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(bin, "--port", port, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting redis-server: %v", err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	url := "redis://" + addr + "/0"
	opts, _ := redis.ParseURL(url)
	c := redis.NewClient(opts)
	defer c.Close()
	for i := 0; ; i++ {
		if c.Ping(context.Background()).Err() == nil {
			return url
		}
		if i == 200 {
			t.Fatalf("redis-server on %s did not answer", addr)
		}
		time.Sleep(25 * time.Millisecond)
	}
}
