package oidcauth

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/caddyserver/caddy/v2/caddyconfig"
	"github.com/caddyserver/caddy/v2/caddytest"
	_ "github.com/caddyserver/caddy/v2/modules/standard"
)

var updateAdapt = flag.Bool("update-adapt", false, "rewrite the expected JSON of testdata/*.caddyfiletest")

// TestCaddyfileAdapt adapts each testdata/*.caddyfiletest (a Caddyfile, a
// line of dashes, then the expected JSON, as in Caddy's own tests). When
// the expected part is not JSON, adapting must fail with an error that
// contains it.
func TestCaddyfileAdapt(t *testing.T) {
	files, err := filepath.Glob("testdata/*.caddyfiletest")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no testdata/*.caddyfiletest files")
	}
	newlines := regexp.MustCompile(`\r?\n`)
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			parts := strings.SplitN(string(data), "----------", 2)
			if len(parts) != 2 {
				t.Fatalf("%s: no ---------- separator", file)
			}
			caddyfile := strings.TrimSpace(parts[0]) + "\n"
			expected := newlines.ReplaceAllString(strings.TrimSpace(parts[1]), "\n")

			if *updateAdapt && strings.HasPrefix(expected, "{") {
				out, _, err := caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
				if err != nil {
					t.Fatalf("adapting: %v", err)
				}
				var pretty bytes.Buffer
				if err := json.Indent(&pretty, out, "", "\t"); err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(file, []byte(strings.TrimSpace(parts[0])+"\n----------\n"+pretty.String()+"\n"), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}

			if strings.HasPrefix(expected, "{") {
				if !caddytest.CompareAdapt(t, file, caddyfile, "caddyfile", expected) {
					t.Errorf("adapted JSON of %s differs from the expected JSON", file)
				}
				return
			}
			_, _, err = caddyconfig.GetAdapter("caddyfile").Adapt([]byte(caddyfile), nil)
			if err == nil {
				t.Fatalf("expected an error containing %q, got none", expected)
			}
			if got := newlines.ReplaceAllString(err.Error(), "\n"); !strings.Contains(got, expected) {
				t.Errorf("error %q does not contain %q", got, expected)
			}
		})
	}
}
