//go:build e2e

package e2e

import (
	"debug/buildinfo"
	"go/version"
	"os/exec"
	"runtime"
	"strings"
	"testing"
)

// minGo is the oldest Go release the Caddy binary may be built with: the
// scripts export GOTOOLCHAIN=go1.27.3 because older releases have standard
// library vulnerabilities that this module's code reaches (SECURITY.md).
const minGo = "go1.27.3"

// The Caddy that users run is the one xcaddy builds; it must carry the pinned
// Go, not whatever Go the machine happens to have.
func TestCaddyBuiltWithPinnedGo(t *testing.T) {
	bin := caddyBinary(t)
	info, err := buildinfo.ReadFile(bin)
	if err != nil {
		t.Fatalf("reading build info of %s: %v", bin, err)
	}
	if version.Compare(info.GoVersion, minGo) < 0 {
		t.Fatalf("caddy was built with %s; want %s or newer (export GOTOOLCHAIN=%s)", info.GoVersion, minGo, minGo)
	}
	if info.GoVersion != runtime.Version() {
		t.Errorf("caddy was built with %s, the tests with %s", info.GoVersion, runtime.Version())
	}
	// What a user sees: `caddy build-info` names the Go release.
	out, err := exec.Command(bin, "build-info").CombinedOutput()
	if err != nil {
		t.Fatalf("caddy build-info: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), info.GoVersion) {
		t.Errorf("caddy build-info does not name %s:\n%s", info.GoVersion, out)
	}
}
