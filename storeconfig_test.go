package oidcauth

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-oidc-auth/oidcauth/internal/store"
	"github.com/caddy-oidc-auth/oidcauth/internal/store/storetest"
)

func TestUnmarshalStoreBlock(t *testing.T) {
	d := caddyfile.NewTestDispenser(`oidc_auth {
		store rediss://app:{env.REDIS_PASSWORD}@redis.example.com:6380/2 {
			tls_ca          /etc/redis/ca.pem
			tls_cert        /etc/redis/client.pem
			tls_key         /etc/redis/client-key.pem
			tls_server_name redis.internal
			dial_timeout    3s
			read_timeout    1500ms
			write_timeout   1s
			key_prefix      staging:
		}
	}`)
	var m OIDCAuth
	if err := m.UnmarshalCaddyfile(d); err != nil {
		t.Fatal(err)
	}
	want := StoreOptions{
		TLSCA: "/etc/redis/ca.pem", TLSCert: "/etc/redis/client.pem", TLSKey: "/etc/redis/client-key.pem",
		TLSServerName: "redis.internal",
		DialTimeout:   caddy.Duration(3 * time.Second), ReadTimeout: caddy.Duration(1500 * time.Millisecond), WriteTimeout: caddy.Duration(time.Second),
		KeyPrefix: "staging:",
	}
	if m.Store != "rediss://app:{env.REDIS_PASSWORD}@redis.example.com:6380/2" {
		t.Errorf("store = %q", m.Store)
	}
	if m.StoreOptions == nil || *m.StoreOptions != want {
		t.Errorf("store options = %+v, want %+v", m.StoreOptions, want)
	}
}

func TestUnmarshalStoreBlockErrors(t *testing.T) {
	for _, in := range []string{
		"store redis://r:1 {\n tls_ca\n }",
		"store redis://r:1 {\n tls_ca a b\n }",
		"store redis://r:1 {\n tls_verify off\n }",
		"store redis://r:1 {\n dial_timeout soon\n }",
		"store {\n tls_ca a\n }",
		"store redis://r:1 extra",
	} {
		d := caddyfile.NewTestDispenser("oidc_auth {\n" + in + "\n}")
		var m OIDCAuth
		err := m.UnmarshalCaddyfile(d)
		if err == nil || !strings.Contains(err.Error(), "store") && !strings.Contains(err.Error(), "argument") {
			t.Errorf("%q: error %v, want one naming store", in, err)
		}
	}
}

// writeTestPEMs writes a CA certificate and a key pair it signs, made in
// the test.
func writeTestPEMs(t *testing.T) (ca, cert, key string) {
	t.Helper()
	return storetest.WritePKI(t, t.TempDir())
}

func TestValidateStore(t *testing.T) {
	ca, cert, key := writeTestPEMs(t)
	notPEM := filepath.Join(t.TempDir(), "not.pem")
	os.WriteFile(notPEM, []byte("hello"), 0o600)
	bad := []struct {
		name  string
		store string
		opts  *StoreOptions
		want  string // in the message, after "store:"
	}{
		{"not redis", "http://redis:6379", nil, "redis://"},
		{"no host", "redis:///0", nil, "host"},
		{"bare host", "localhost:6379", nil, "redis://"},
		{"unparsable", "redis://%zz", nil, ""},
		{"bad db", "redis://r:6379/x", nil, "database"},
		{"unknown parameter", "redis://r:6379/0?colour=blue", nil, "colour"},
		{"empty master_name", "redis://s1:26379?master_name=&addr=s2:26379", nil, "master_name"},
		{"sentinel bad addr", "redis://s1:26379?master_name=m&addr=s2", nil, "addr"},
		{"cluster bad addr", "redis://n1:7000?addr=n2", nil, "addr"},
		{"cluster unknown parameter", "redis://n1:7000?addr=n2:7000&colour=blue", nil, "colour"},
		{"tls files without rediss", "redis://r:6379", &StoreOptions{TLSCA: ca}, "rediss://"},
		{"missing tls_ca", "rediss://r:6379", &StoreOptions{TLSCA: "/nonexistent/ca.pem"}, "tls_ca"},
		{"tls_ca not PEM", "rediss://r:6379", &StoreOptions{TLSCA: notPEM}, "tls_ca"},
		{"tls_cert without tls_key", "rediss://r:6379", &StoreOptions{TLSCert: cert}, "tls_key"},
		{"tls_key not matching", "rediss://r:6379", &StoreOptions{TLSCert: cert, TLSKey: ca}, "tls_cert"},
		{"negative timeout", "redis://r:6379", &StoreOptions{ReadTimeout: -1}, "read_timeout"},
		{"braces in key_prefix", "redis://n1:7000?addr=n2:7000", &StoreOptions{KeyPrefix: "{x}:"}, "key_prefix"},
		{"options without store", "", &StoreOptions{KeyPrefix: "x:"}, ""},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			m := validConfig()
			m.Store, m.StoreOptions = tt.store, tt.opts
			err := m.Validate()
			if err == nil {
				t.Fatal("Validate() succeeded")
			}
			if !strings.HasPrefix(err.Error(), "store") || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q: want it to start with store and mention %q", err, tt.want)
			}
		})
	}

	good := []struct {
		name  string
		store string
		opts  *StoreOptions
		topo  string
	}{
		{"plain", "redis://r:6379/0", nil, store.TopologySingle},
		{"ACL user over TLS", "rediss://app:secret@r:6380/2", nil, store.TopologySingle},
		{"TLS files", "rediss://10.0.0.5:6380", &StoreOptions{TLSCA: ca, TLSCert: cert, TLSKey: key, TLSServerName: "redis.internal"}, store.TopologySingle},
		{"timeouts and prefix", "redis://r:6379", &StoreOptions{DialTimeout: caddy.Duration(time.Second), KeyPrefix: "staging:"}, store.TopologySingle},
		{"sentinel", "redis://s1:26379/0?master_name=mymaster&addr=s2:26379&addr=s3:26379", nil, store.TopologySentinel},
		{"sentinel with master password", "redis://s1:26379/0?master_name=m&username=app&password=pw", nil, store.TopologySentinel},
		{"cluster", "redis://n1:7000?addr=n2:7000&addr=n3:7000", nil, store.TopologyCluster},
		{"cluster over TLS", "rediss://app:pw@n1:7000?addr=n2:7000", &StoreOptions{TLSCA: ca}, store.TopologyCluster},
	}
	for _, tt := range good {
		t.Run(tt.name, func(t *testing.T) {
			m := validConfig()
			m.Store, m.StoreOptions = tt.store, tt.opts
			if err := m.Validate(); err != nil {
				t.Fatalf("Validate() = %v", err)
			}
			if topo, err := store.RedisTopology(tt.store); err != nil || topo != tt.topo {
				t.Errorf("topology %q, %v; want %q", topo, err, tt.topo)
			}
		})
	}
}

// The password of an ACL user never shows in an error message.
func TestValidateStoreRedactsPassword(t *testing.T) {
	for _, raw := range []string{
		"redis://app:s3cr3t-pw@r:6379/x",
		"redis://app:s3cr3t-pw@r:6379/%zz",
		"redis://s1:26379/x?master_name=m&password=s3cr3t-pw",
		"redis://s1:26379/0?master_name=m&password=s3cr3t-pw&addr=bad",
		"redis://s1:26379/%zz?master_name=m&password=s3cr3t-pw",
	} {
		m := validConfig()
		m.Store = raw
		err := m.Validate()
		if err == nil || strings.Contains(err.Error(), "s3cr3t-pw") {
			t.Errorf("%s: error %v shows the password (or there is no error)", raw, err)
		}
	}
}

// The store URL's secrets come from {env.*} placeholders.
func TestStoreURLFromEnv(t *testing.T) {
	t.Setenv("OIDC_TEST_REDIS_PASSWORD", "pw")
	m := validConfig()
	m.Store = "rediss://app:{env.OIDC_TEST_REDIS_PASSWORD}@r:6380/0"
	out, err := expandSecret(caddy.NewReplacer(), "store", m.Store)
	if err != nil || out != "rediss://app:pw@r:6380/0" {
		t.Fatalf("expanded to %q, %v", out, err)
	}
	if _, err := expandSecret(caddy.NewReplacer(), "store", "rediss://app:{env.OIDC_TEST_UNSET_X}@r:6380/0"); err == nil || !strings.HasPrefix(err.Error(), "store:") {
		t.Fatalf("an unset variable in the store URL: %v", err)
	}
}
