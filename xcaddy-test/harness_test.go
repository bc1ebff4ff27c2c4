//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"debug/buildinfo"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

const (
	caddyVersion  = "v2.11.9"
	modulePath    = "github.com/caddy-oidc-auth/oidcauth"
	xcaddyVersion = "v0.4.5"
)

var (
	repoRoot  string // the module's checkout
	rigDir    string // xcaddy-test/
	caddyBin  string // the binary under test
	buildOnce sync.Once
	buildErr  error

	sharedKeysFile string // the IdPs' signing JWKS, unless a test brings its own
)

// writeSigningKeys writes a private RS256 JWKS in the format the test IdP
// reads from IDP_KEYS_FILE.
func writeSigningKeys(path string) error {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		return err
	}
	jwk := jose.JSONWebKey{Key: key, KeyID: "e2e-" + strconv.FormatInt(time.Now().UnixNano(), 36), Algorithm: "RS256", Use: "sig"}
	b, err := json.Marshal(map[string]any{"keys": []jose.JSONWebKey{jwk}})
	if err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o600)
}

func TestMain(m *testing.M) {
	wd, err := os.Getwd()
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	rigDir = wd
	repoRoot = filepath.Dir(wd)
	// One signing key for every IdP of the run: RSA key generation is the
	// slowest part of an IdP's start, and on a busy 2-core machine it made
	// starts time out.
	dir, err := os.MkdirTemp("", "oidcauth-e2e-keys-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	sharedKeysFile = filepath.Join(dir, "jwks.json")
	if err := writeSigningKeys(sharedKeysFile); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// caddyBinary builds Caddy with the module once per test run and returns its
// path. E2E_CADDY skips the build.
func caddyBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		if p := os.Getenv("E2E_CADDY"); p != "" {
			caddyBin = p
			return
		}
		caddyBin = filepath.Join(rigDir, ".build", "caddy")
		buildErr = buildCaddy(caddyBin)
	})
	if buildErr != nil {
		t.Fatalf("building caddy: %v", buildErr)
	}
	return caddyBin
}

func buildCaddy(out string) error {
	if fresh, err := binaryIsFresh(out); err != nil {
		return err
	} else if fresh {
		return nil
	}
	xcaddy, err := findXcaddy()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, xcaddy, "build", caddyVersion,
		// xcaddy asks the Go proxy about a module path without a version, and the
		// proxy does not know this one; a pinned pseudo version with a local
		// replacement avoids the lookup.
		"--with", modulePath+"@v0.0.0="+repoRoot,
		"--output", out+".tmp")
	var log bytes.Buffer
	cmd.Stdout = &log
	cmd.Stderr = &log
	start := time.Now()
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("xcaddy build: %v\n%s", err, log.String())
	}
	if err := os.Rename(out+".tmp", out); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "built %s in %s\n", out, time.Since(start).Round(time.Second))
	return nil
}

// binaryIsFresh reports whether out exists, was built by this Go release and
// is newer than every Go source
// file (tests aside) and module file of the repository outside this rig.
func binaryIsFresh(out string) (bool, error) {
	st, err := os.Stat(out)
	if err != nil {
		return false, nil
	}
	// A binary left by an older Go (the machine's own, say) is rebuilt.
	if info, err := buildinfo.ReadFile(out); err != nil || info.GoVersion != runtime.Version() {
		return false, nil
	}
	stale := errors.New("stale")
	err = filepath.WalkDir(repoRoot, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		name := d.Name()
		if d.IsDir() {
			if path != repoRoot && (path == rigDir || strings.HasPrefix(name, ".") || name == "node_modules" || name == "testdata") {
				return filepath.SkipDir
			}
			return nil
		}
		relevant := (strings.HasSuffix(name, ".go") && !strings.HasSuffix(name, "_test.go")) || name == "go.mod" || name == "go.sum"
		if !relevant {
			return nil
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		if info.ModTime().After(st.ModTime()) {
			return stale
		}
		return nil
	})
	if errors.Is(err, stale) {
		return false, nil
	}
	return err == nil, err
}

func findXcaddy() (string, error) {
	if p, err := exec.LookPath("xcaddy"); err == nil {
		return p, nil
	}
	gopath, err := exec.Command("go", "env", "GOPATH").Output()
	if err == nil {
		p := filepath.Join(strings.TrimSpace(string(gopath)), "bin", "xcaddy")
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("xcaddy not found; run scripts/setup.sh (go install github.com/caddyserver/xcaddy/cmd/xcaddy@%s)", xcaddyVersion)
}

// freePort asks the kernel for an unused port on 127.0.0.1.
// Ports handed to servers the tests start (IdPs, Caddy sites, admin
// endpoints, Redis) come from below Linux's ephemeral range (32768 and up),
// each at most once per run: a port the kernel hands out itself (to a
// client connection or a listener on :0) can then never be the one a
// process is about to bind, which made a Caddy fail to start while the
// test talked to another one.
var (
	portMu   sync.Mutex
	nextPort = 20000 + os.Getpid()%4000
)

func freePort(t *testing.T) int {
	t.Helper()
	portMu.Lock()
	defer portMu.Unlock()
	for tries := 0; tries < 2000; tries++ {
		p := nextPort
		nextPort++
		if nextPort >= 32000 {
			nextPort = 20000
		}
		l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", p))
		if err != nil {
			continue // taken by something else on the machine
		}
		l.Close()
		return p
	}
	t.Fatal("no free port below the ephemeral range")
	return 0
}

// closedPort returns a port on 127.0.0.1 that nothing listens on.
func closedPort(t *testing.T) int {
	return freePort(t)
}

// logBuffer collects the output of a child process; safe for concurrent use.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// process is a child process whose output is dumped into the test log when the
// test fails (or always with E2E_SHOW_LOGS=1).
type process struct {
	name string
	cmd  *exec.Cmd
	log  *logBuffer
	done chan struct{}
	err  error
}

func startProcess(t *testing.T, name string, cmd *exec.Cmd) *process {
	t.Helper()
	p := &process{name: name, cmd: cmd, log: &logBuffer{}, done: make(chan struct{})}
	cmd.Stdout = p.log
	cmd.Stderr = p.log
	if err := cmd.Start(); err != nil {
		t.Fatalf("starting %s: %v", name, err)
	}
	go func() {
		p.err = cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() || os.Getenv("E2E_SHOW_LOGS") == "1" {
			t.Logf("----- %s output -----\n%s----- end of %s output -----", name, tail(p.log.String(), 400), name)
		}
	})
	return p
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// stop asks the process to end and kills it when it takes too long.
func (p *process) stop() {
	if p.exited() {
		return
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// tail keeps the last n lines of s.
func tail(s string, n int) string {
	lines := strings.SplitAfter(s, "\n")
	if len(lines) <= n {
		return s
	}
	return fmt.Sprintf("[... %d earlier lines ...]\n", len(lines)-n) + strings.Join(lines[len(lines)-n:], "")
}

// waitFor polls ok until it returns true or the timeout passes.
func waitFor(t *testing.T, what string, timeout time.Duration, ok func() bool) {
	t.Helper()
	if !waitUntil(timeout, ok) {
		t.Fatalf("timed out after %s waiting for %s", timeout, what)
	}
}

// waitUntil polls ok until it returns true (true) or the timeout passes
// (false).
func waitUntil(timeout time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(timeout)
	for {
		if ok() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(50 * time.Millisecond)
	}
}
