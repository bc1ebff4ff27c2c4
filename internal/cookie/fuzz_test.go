package cookie

// Fuzz targets for the cookies a client sends: sealed values and chunked
// cookie sets. Each target checks invariants, not just the absence of
// panics. Run them with `bash scripts/fuzz.sh [seconds]`; their seed
// corpora are under testdata/fuzz/<FuzzName>/ and run with every
// `go test`. Both targets are hermetic: no network, no timers.

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// Fixed inputs, so that the committed seed corpora (which hold sealed
// cookies) stay valid from run to run.
const (
	fuzzCookieSecret   = "fuzz-cookie-secret-0123456789abcdef"
	fuzzPreviousSecret = "fuzz-previous-secret-0123456789abcdef"
	fuzzIssuer         = "https://idp.fuzz.example"
	fuzzClientID       = "fuzz-app"
	fuzzCookieName     = "oidc_fuzz"

	// A purpose of the caller's own (the handler seals refresh outcomes).
	purposeRefresh = "refresh"
)

// fuzzPlaintexts are the only plaintexts the cookie targets ever seal, per
// purpose. A value that opens to anything else was forged.
var fuzzPlaintexts = map[string][]string{
	PurposeSession: {
		`{"i":"sess-1","s":"user-1","d":"sid-1","c":1800000000,"a":"access-1","r":"refresh-1","e":1800003600,"f":1800003000}`,
		`{"i":"sess-2","s":"user-2","c":1800000000,"a":"access-2","e":1800003600,"f":1800003000,"m":{"email":"u2@example.com"}}`,
	},
	PurposeState:   {`{"s":"state-state-state-state","n":"nonce","v":"verifier","r":"/x","c":1800000000}`},
	PurposeIDToken: {"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyLTEifQ.c2ln"},
	purposeRefresh: {"refresh-outcome"},
}

var fuzzPurposes = []string{PurposeSession, PurposeState, PurposeIDToken, purposeRefresh}

func fuzzCodecs(tb testing.TB) (current, rotating, previousOnly *Codec) {
	tb.Helper()
	var err error
	if current, err = New([]byte(fuzzCookieSecret), fuzzIssuer, fuzzClientID, fuzzCookieName); err != nil {
		tb.Fatal(err)
	}
	// The same secrets during a rotation: opens values of either secret.
	if rotating, err = New([]byte(fuzzCookieSecret), fuzzIssuer, fuzzClientID, fuzzCookieName, []byte(fuzzPreviousSecret)); err != nil {
		tb.Fatal(err)
	}
	if previousOnly, err = New([]byte(fuzzPreviousSecret), fuzzIssuer, fuzzClientID, fuzzCookieName); err != nil {
		tb.Fatal(err)
	}
	return current, rotating, previousOnly
}

func isFuzzPlaintext(purpose string, plain []byte) bool {
	for _, p := range fuzzPlaintexts[purpose] {
		if string(plain) == p {
			return true
		}
	}
	return false
}

// FuzzCookieOpen: Open and ReadSession accept only values that Seal made,
// for the purpose they were sealed for, and never panic.
func FuzzCookieOpen(f *testing.F) {
	current, rotating, previousOnly := fuzzCodecs(f)
	for _, purpose := range fuzzPurposes {
		for _, p := range fuzzPlaintexts[purpose] {
			v := current.Seal(purpose, []byte(p))
			f.Add(purpose, v)
			f.Add(purpose, previousOnly.Seal(purpose, []byte(p)))
			f.Add(PurposeSession, v) // another purpose
			f.Add(purpose, v[:len(v)-1])
			f.Add(purpose, v+"A")
			f.Add(purpose, "AQ"+v[2:])
			f.Add(purpose, "Ag"+v[2:]) // another version byte
		}
	}
	for _, s := range []string{"", "A", "AQ", "AQ==", "....", "3.AAAA", "\x00\xff", strings.Repeat("A", 5000)} {
		f.Add(PurposeSession, s)
	}

	f.Fuzz(func(t *testing.T, purpose, value string) {
		for _, c := range []*Codec{current, rotating} {
			plain, err := c.Open(purpose, value)
			if err != nil {
				if !errors.Is(err, ErrInvalid) {
					t.Fatalf("open: unexpected error type %v", err)
				}
			} else if !isFuzzPlaintext(purpose, plain) {
				t.Fatalf("open(%q, %q) accepted a value seal never made: %q", purpose, value, plain)
			}
		}

		// The same value as a session cookie: a session comes out only
		// when the value is one of the sealed sessions.
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Cookie", fuzzCookieName+"="+value)
		for _, c := range []*Codec{current, rotating} {
			s, err := c.ReadSession(r)
			if err != nil {
				continue
			}
			raw, _ := json.Marshal(s)
			var got map[string]any
			_ = json.Unmarshal(raw, &got)
			ok := false
			for _, p := range fuzzPlaintexts[PurposeSession] {
				var want map[string]any
				_ = json.Unmarshal([]byte(p), &want)
				if fmt.Sprint(got) == fmt.Sprint(want) {
					ok = true
				}
			}
			if !ok {
				t.Fatalf("readSession accepted %q as session %s", value, raw)
			}
			if s.ID == "" || s.Subject == "" || s.AccessToken == "" {
				t.Fatalf("readSession accepted an incomplete session %s", raw)
			}
		}
	})
}

// cookieSafe keeps only base64url characters, the alphabet of every value
// the handler writes.
func cookieSafe(s string, max int) string {
	var b strings.Builder
	for i := 0; i < len(s) && b.Len() < max; i++ {
		if isBase64URL(s[i]) {
			b.WriteByte(s[i])
		}
	}
	return b.String()
}

// FuzzReadChunked: reassembly of arbitrary cookie sets never panics and
// returns exactly the parts it claims; a value written by writeChunked
// reads back unchanged, and chunks of an older, longer value are expired.
func FuzzReadChunked(f *testing.F) {
	const name = "oidc_fuzz"
	f.Add("oidc_fuzz=abc", "abc")
	f.Add("oidc_fuzz=3.aaa; oidc_fuzz_1=bbb; oidc_fuzz_2=ccc", strings.Repeat("x", 9000))
	f.Add("oidc_fuzz=3.aaa; oidc_fuzz_2=ccc", "")
	f.Add("oidc_fuzz=9.a; oidc_fuzz_1=b", strings.Repeat("y", 3801))
	f.Add("oidc_fuzz=-1.a", "z")
	f.Add("oidc_fuzz=+2.a; oidc_fuzz_1=b", "z")
	f.Add("oidc_fuzz=2.; oidc_fuzz_1=", "z")
	f.Add("oidc_fuzz=1.a", strings.Repeat("q", 8*3800))
	f.Add("oidc_fuzz=a; oidc_fuzz=b; oidc_fuzz_1=c", strings.Repeat("q", 8*3800+1))
	f.Add("oidc_fuzz=2.a.b; oidc_fuzz_1=c; oidc_fuzz_7=x", "w")
	f.Add(`oidc_fuzz="2.a"; oidc_fuzz_1="b"`, "v")

	f.Fuzz(func(t *testing.T, header, value string) {
		r := httptest.NewRequest(http.MethodGet, "/", nil)
		r.Header.Set("Cookie", header)
		got, n, ok := readChunked(r, name)
		if ok {
			first, err := r.Cookie(name)
			if err != nil {
				t.Fatalf("ok without a first cookie")
			}
			if n < 1 || n > maxChunks {
				t.Fatalf("chunk count %d out of range", n)
			}
			want := first.Value
			if dot := strings.IndexByte(first.Value, '.'); dot >= 0 {
				want = first.Value[dot+1:]
				for i := 1; i < n; i++ {
					c, err := r.Cookie(chunkName(name, i))
					if err != nil {
						t.Fatalf("ok although chunk %d is missing", i)
					}
					want += c.Value
				}
			} else if n != 1 {
				t.Fatalf("%d chunks for a value without a count", n)
			}
			if got != want {
				t.Fatalf("readChunked = %q, want %q", got, want)
			}
		} else if got != "" {
			t.Fatalf("refused but returned %q", got)
		}

		// Round trip, on a request that carries the fuzzed cookies.
		v := cookieSafe(value, (maxChunks+1)*maxChunkLen)
		rec := httptest.NewRecorder()
		err := writeChunked(rec, r, name, "/", v, 60)
		need := (len(v) + maxChunkLen - 1) / maxChunkLen
		if need > maxChunks {
			if err == nil {
				t.Fatalf("%d bytes written in more than %d chunks", len(v), maxChunks)
			}
			return
		}
		if err != nil {
			t.Fatalf("writeChunked(%d bytes): %v", len(v), err)
		}
		next := httptest.NewRequest(http.MethodGet, "/", nil)
		expired := map[string]bool{}
		for _, c := range rec.Result().Cookies() {
			if c.MaxAge < 0 {
				expired[c.Name] = true
				continue
			}
			if len(c.Name)+len(c.Value) > 4000 {
				t.Fatalf("cookie %s of %d bytes exceeds what browsers keep", c.Name, len(c.Value))
			}
			next.AddCookie(&http.Cookie{Name: c.Name, Value: c.Value})
		}
		back, _, ok := readChunked(next, name)
		if !ok || back != v {
			t.Fatalf("round trip of %d bytes: ok=%v, got %d bytes", len(v), ok, len(back))
		}
		for i := max(need, 1); i < maxChunks; i++ {
			if _, err := r.Cookie(chunkName(name, i)); err == nil && !expired[chunkName(name, i)] {
				t.Fatalf("leftover chunk %d of the older value not expired", i)
			}
		}
	})
}

// isBase64URL reports whether c is in the base64url alphabet.
func isBase64URL(c byte) bool {
	return c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_'
}

// TestWriteFuzzSeeds regenerates the committed seed corpora under
// testdata/fuzz/ (sealed cookies made with the fixed secrets above). Run
// with OIDCAUTH_WRITE_FUZZ_SEEDS=1.
func TestWriteFuzzSeeds(t *testing.T) {
	if os.Getenv("OIDCAUTH_WRITE_FUZZ_SEEDS") == "" {
		t.Skip("set OIDCAUTH_WRITE_FUZZ_SEEDS=1 to rewrite testdata/fuzz seeds")
	}
	write := func(target, name string, args ...string) {
		text := "go test fuzz v1\n"
		for _, a := range args {
			text += fmt.Sprintf("string(%q)\n", a)
		}
		path := filepath.Join("testdata", "fuzz", target, name)
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	current, _, previousOnly := fuzzCodecs(t)
	for _, purpose := range fuzzPurposes {
		v := current.Seal(purpose, []byte(fuzzPlaintexts[purpose][0]))
		write("FuzzCookieOpen", "sealed-"+purpose, purpose, v)
		write("FuzzCookieOpen", "previous-"+purpose, purpose, previousOnly.Seal(purpose, []byte(fuzzPlaintexts[purpose][0])))
		write("FuzzCookieOpen", "wrong-purpose-"+purpose, PurposeState, v)
		flipped := []byte(v)
		flipped[len(flipped)/2] ^= 0x01
		write("FuzzCookieOpen", "flipped-"+purpose, purpose, string(flipped))
	}
	big := current.Seal(PurposeSession, []byte(fuzzPlaintexts[PurposeSession][1]))
	write("FuzzReadChunked", "session-in-two-chunks", fuzzCookieName+"=2."+big[:len(big)/2]+"; "+fuzzCookieName+"_1="+big[len(big)/2:], big)
	write("FuzzReadChunked", "count-without-chunks", fuzzCookieName+"=8.AAAA", strings.Repeat("B", 5*maxChunkLen))
	write("FuzzReadChunked", "duplicate-first", fuzzCookieName+"=AAAA; "+fuzzCookieName+"=2.BB; "+fuzzCookieName+"_1=CC", "D")
}

// FuzzSessionUnpack: any session payload (as if sealed by this codec)
// unpacks to a session or ErrInvalid without panicking, and a session that
// unpacks packs again into a payload that gives the same session back.
func FuzzSessionUnpack(f *testing.F) {
	c, _, _ := fuzzCodecs(f)
	for _, p := range append(fuzzPlaintexts[PurposeSession],
		`{"i":"sess-3","s":"user-3","c":1800000000,"a":"eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ1c2VyLTMifQ.c2lnbmF0dXJl","e":1800003600,"f":1800003000}`) {
		f.Add([]byte(p))
		var s Session
		if err := json.Unmarshal([]byte(p), &s); err != nil {
			f.Fatal(err)
		}
		packed, err := c.packer.pack(&s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(packed)
	}
	f.Fuzz(func(t *testing.T, payload []byte) {
		s, err := c.packer.unpack(payload)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("unpack: %v", err)
			}
			return
		}
		again, err := c.packer.pack(s)
		if err != nil {
			t.Fatalf("pack of an unpacked session: %v", err)
		}
		s2, err := c.packer.unpack(again)
		if err != nil {
			t.Fatalf("a packed session does not unpack: %v", err)
		}
		if !reflect.DeepEqual(decodedForm(t, s), decodedForm(t, s2)) {
			t.Fatalf("round trip changed the session:\n%+v\n%+v", s, s2)
		}
	})
}

// decodedForm returns s with its claims decoded: json.Marshal writes a
// RawMessage again compacted and with <, >, & and invalid UTF-8 escaped.
func decodedForm(t *testing.T, s *Session) any {
	t.Helper()
	cp := *s
	var claims any
	if len(cp.Claims) > 0 {
		if err := json.Unmarshal(cp.Claims, &claims); err != nil {
			t.Fatalf("claims: %v", err)
		}
	}
	cp.Claims = nil
	return []any{cp, claims}
}
