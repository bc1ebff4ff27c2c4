package oidcauth

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/caddyserver/caddy/v2"
	"github.com/caddyserver/caddy/v2/caddyconfig/caddyfile"

	"github.com/caddy-oidc-auth/oidcauth/internal/store"
)

// StoreOptions are the settings of a Redis store beyond its URL: TLS files,
// timeouts and the key prefix. They need `store`.
type StoreOptions struct {
	// PEM file of the CA certificates that sign the Redis server's
	// certificate, for a rediss:// store. Default: the system's roots.
	TLSCA string `json:"tls_ca,omitempty"`

	// PEM file of the client certificate that Redis asks for (mutual TLS),
	// with tls_key. Default: none.
	TLSCert string `json:"tls_cert,omitempty"`

	// PEM file of the client certificate's private key. Default: none.
	TLSKey string `json:"tls_key,omitempty"`

	// The name the server's certificate must carry, when it is not the
	// host in the URL (a server reached by IP address). With Sentinel or
	// a Cluster every node's certificate is checked against this one
	// name. Default: the URL's host.
	TLSServerName string `json:"tls_server_name,omitempty"`

	// How long to wait for a connection to Redis. Default: `2s`, or
	// the URL's dial_timeout.
	DialTimeout caddy.Duration `json:"dial_timeout,omitempty"`

	// How long to wait for a reply from Redis. Default: `2s`, or the
	// URL's read_timeout.
	ReadTimeout caddy.Duration `json:"read_timeout,omitempty"`

	// How long to wait for a command to be written to Redis. Default:
	// `2s`, or the URL's write_timeout.
	WriteTimeout caddy.Duration `json:"write_timeout,omitempty"`

	// Starts the name of every key the store writes, so several
	// deployments can share one Redis. Default: `oidc_auth:`.
	KeyPrefix string `json:"key_prefix,omitempty"`
}

// unmarshalStore parses `store <url> [{ ... }]` into m.
func unmarshalStore(d *caddyfile.Dispenser, m *OIDCAuth) error {
	if m.Store != "" {
		return d.Err("store: given more than once")
	}
	if !d.NextArg() {
		return d.Err("store: wrong number of arguments")
	}
	m.Store = d.Val()
	if d.NextArg() {
		return d.Err("store: wrong number of arguments")
	}
	for d.NextBlock(1) {
		if m.StoreOptions == nil {
			m.StoreOptions = &StoreOptions{}
		}
		o := m.StoreOptions
		opt := d.Val()
		strs := map[string]*string{
			"tls_ca":          &o.TLSCA,
			"tls_cert":        &o.TLSCert,
			"tls_key":         &o.TLSKey,
			"tls_server_name": &o.TLSServerName,
			"key_prefix":      &o.KeyPrefix,
		}
		durs := map[string]*caddy.Duration{
			"dial_timeout":  &o.DialTimeout,
			"read_timeout":  &o.ReadTimeout,
			"write_timeout": &o.WriteTimeout,
		}
		_, isStr := strs[opt]
		_, isDur := durs[opt]
		if !isStr && !isDur {
			return d.Errf("store: unrecognized option %q", opt)
		}
		if !d.NextArg() {
			return d.Errf("store: %s needs a value", opt)
		}
		v := d.Val()
		if d.NextArg() {
			return d.Errf("store: %s takes one value", opt)
		}
		if isStr {
			*strs[opt] = v
			continue
		}
		dur, err := caddy.ParseDuration(v)
		if err != nil {
			return d.Errf("store: %s: %v", opt, err)
		}
		*durs[opt] = caddy.Duration(dur)
	}
	return nil
}

// redis is the store package's view of the settings; nil has none.
func (o *StoreOptions) redis() store.RedisOptions {
	if o == nil {
		return store.RedisOptions{}
	}
	return store.RedisOptions{
		TLSCA:         o.TLSCA,
		TLSCert:       o.TLSCert,
		TLSKey:        o.TLSKey,
		TLSServerName: o.TLSServerName,
		DialTimeout:   time.Duration(o.DialTimeout),
		ReadTimeout:   time.Duration(o.ReadTimeout),
		WriteTimeout:  time.Duration(o.WriteTimeout),
		KeyPrefix:     o.KeyPrefix,
	}
}

// checkStore validates store and its options as Redis would read them
// (go-redis's own URL parsers, the TLS files), without connecting.
func checkStore(url string, opts *StoreOptions) error {
	if url == "" {
		if opts != nil {
			return errors.New("store_options: need a store URL")
		}
		return nil
	}
	if o := opts; o != nil {
		for name, d := range map[string]caddy.Duration{"dial_timeout": o.DialTimeout, "read_timeout": o.ReadTimeout, "write_timeout": o.WriteTimeout} {
			if d < 0 {
				return fmt.Errorf("store: %s: must be positive, got %s", name, time.Duration(d))
			}
		}
		if strings.ContainsAny(o.KeyPrefix, " {}\r\n") {
			// Braces would change the hash slot of every key in a Cluster.
			return fmt.Errorf("store: key_prefix: %q must not contain spaces or braces", o.KeyPrefix)
		}
	}
	if err := store.CheckRedis(url, opts.redis()); err != nil {
		return fmt.Errorf("store: %v", redactURL(err.Error(), url))
	}
	return nil
}

// redactURL keeps the passwords of the store URL (its user part, and the
// Sentinel form's password parameter) out of error messages.
func redactURL(msg, raw string) string {
	if i, j := strings.Index(raw, "://"), strings.LastIndex(raw, "@"); i >= 0 && j > i+3 {
		msg = strings.ReplaceAll(msg, raw[i+3:j], "***")
	}
	if _, q, ok := strings.Cut(raw, "?"); ok {
		for _, kv := range strings.Split(q, "&") {
			if k, v, _ := strings.Cut(kv, "="); k == "password" && v != "" {
				msg = strings.ReplaceAll(msg, v, "***")
			}
		}
	}
	return msg
}
