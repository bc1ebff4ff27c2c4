package cookie

import (
	"bytes"
	"compress/flate"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"io"
	"strings"
	"sync"
)

// The session cookie rides on every request, and its size is most of what
// a protected request costs beyond plain Caddy: net/http reads, checks and
// copies every byte of it before any handler runs. So the session is packed
// before it is sealed:
//
//	0x02 | uvarint n | signature (n bytes) |
//	deflate(dictionary, uvarint h | JWT header (h bytes) | uvarint p | JWT payload (p bytes) | session JSON)
//
// A JWT access token is kept as its decoded parts: deflate then sees the
// token's JSON, which repeats the session's claims and the names in the
// dictionary, where in base64 it saw noise. The signature, random bytes,
// stays outside the deflate stream. With n == 0 (an opaque access token, or
// any other form) h and p are 0 and the token is in the session JSON ("a").
//
// The dictionary (names that IdPs and this package write, then the issuer
// and the client ID) is part of the format: changing it needs a new first
// byte. Older formats still open: 0x01 is deflate(session JSON) without a
// dictionary, '{' is plain JSON.
//
// Compressing before encrypting leaks nothing across users: a cookie holds
// only what the IdP issued to its own user.
const (
	sessionDeflated = 0x01
	sessionPacked   = 0x02

	maxSessionInflate = 64 << 10 // bytes of session JSON and token parts, inflated
	maxSignature      = 1 << 10  // bytes of a JWT signature (RS512 with a 8192-bit key)
)

const dictionaryNames = `{"alg":"ES256","typ":"JWT","kid":"{"alg":"RS256","typ":"at+jwt","kid":"` +
	`"nbf":"auth_time":"acr":"amr":["pwd"],"azp":"at_hash":"nonce":"cid":"uid":"ver":1,"scp":["` +
	`"jti":"","sub":"","iat":,"exp":,"scope":"openid profile email offline_access","client_id":"` +
	`"org_id":"","oid":"","sid":"","roles":["","permissions":["","groups":["` +
	`"email":"","email_verified":true,"family_name":"","given_name":"","name":"","preferred_username":"` +
	`{"i":"","s":"","d":"","c":,"l":,"t":,"a":"","r":"","e":,"f":,"m":{"`

// packer compresses and expands session payloads with the dictionary of
// one app (its issuer and client ID).
type packer struct {
	dict    []byte
	writers sync.Pool // *flate.Writer with dict; only logins and refreshes write
}

func newPacker(issuer, clientID string) *packer {
	dict := []byte(dictionaryNames + `"iss":"` + issuer + `","aud":["` + clientID + `"]`)
	p := &packer{dict: dict}
	p.writers.New = func() any {
		w, _ := flate.NewWriterDict(nil, flate.BestCompression, dict)
		return w
	}
	return p
}

// pack returns the payload to seal for s.
func (p *packer) pack(s *Session) ([]byte, error) {
	hdr, payload, sig, split := splitJWT(s.AccessToken)
	rest := *s
	if split {
		rest.AccessToken = ""
	}
	js, err := json.Marshal(&rest)
	if err != nil {
		return nil, err
	}
	out := binary.AppendUvarint([]byte{sessionPacked}, uint64(len(sig)))
	out = append(out, sig...)
	body := binary.AppendUvarint(make([]byte, 0, 2*binary.MaxVarintLen64+len(hdr)+len(payload)+len(js)), uint64(len(hdr)))
	body = append(body, hdr...)
	body = binary.AppendUvarint(body, uint64(len(payload)))
	body = append(body, payload...)
	body = append(body, js...)

	buf := bytes.NewBuffer(out)
	fw := p.writers.Get().(*flate.Writer)
	fw.Reset(buf)
	_, _ = fw.Write(body)
	err = fw.Close()
	p.writers.Put(fw)
	if err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// unpack decodes a payload made by pack, or by an older version.
func (p *packer) unpack(sealed []byte) (*Session, error) {
	if len(sealed) == 0 {
		return nil, ErrInvalid
	}
	s := new(Session)
	switch sealed[0] {
	case '{':
		if json.Unmarshal(sealed, s) != nil {
			return nil, ErrInvalid
		}
		return s, nil
	case sessionDeflated:
		js, err := inflate(sealed[1:], nil)
		if err != nil || json.Unmarshal(js, s) != nil {
			return nil, ErrInvalid
		}
		return s, nil
	case sessionPacked:
	default:
		return nil, ErrInvalid
	}
	n, k := binary.Uvarint(sealed[1:])
	if k <= 0 || n > maxSignature || n > uint64(len(sealed)-1-k) {
		return nil, ErrInvalid
	}
	sig := sealed[1+k : 1+k+int(n)]
	body, err := inflate(sealed[1+k+int(n):], p.dict)
	if err != nil {
		return nil, ErrInvalid
	}
	hdr, body, ok1 := cutPart(body)
	payload, js, ok2 := cutPart(body)
	if !ok1 || !ok2 || json.Unmarshal(js, s) != nil {
		return nil, ErrInvalid
	}
	if len(sig) == 0 {
		if len(hdr) != 0 || len(payload) != 0 {
			return nil, ErrInvalid
		}
		return s, nil
	}
	if s.AccessToken != "" || len(hdr) == 0 || len(payload) == 0 {
		return nil, ErrInvalid
	}
	s.AccessToken = joinJWT(hdr, payload, sig)
	return s, nil
}

func inflate(b, dict []byte) ([]byte, error) {
	fr := flate.NewReaderDict(bytes.NewReader(b), dict)
	defer fr.Close()
	out, err := io.ReadAll(io.LimitReader(fr, maxSessionInflate+1))
	if err != nil || len(out) > maxSessionInflate {
		return nil, ErrInvalid
	}
	return out, nil
}

// cutPart splits a uvarint-prefixed part off b.
func cutPart(b []byte) (part, rest []byte, ok bool) {
	n, k := binary.Uvarint(b)
	if k <= 0 || n > uint64(len(b)-k) {
		return nil, nil, false
	}
	return b[k : k+int(n)], b[k+int(n):], true
}

// splitJWT decodes a compact JWS into its parts, when joinJWT gives back
// exactly tok.
func splitJWT(tok string) (hdr, payload, sig []byte, ok bool) {
	h, rest, ok1 := strings.Cut(tok, ".")
	pl, sg, ok2 := strings.Cut(rest, ".")
	if !ok1 || !ok2 || h == "" || pl == "" || sg == "" {
		return nil, nil, nil, false
	}
	enc := base64.RawURLEncoding.Strict()
	var err [3]error
	hdr, err[0] = enc.DecodeString(h)
	payload, err[1] = enc.DecodeString(pl)
	sig, err[2] = enc.DecodeString(sg)
	if err[0] != nil || err[1] != nil || err[2] != nil || len(sig) > maxSignature || joinJWT(hdr, payload, sig) != tok {
		// A fourth part, line breaks (which the decoder skips) or a huge
		// signature: kept as it is.
		return nil, nil, nil, false
	}
	return hdr, payload, sig, true
}

func joinJWT(hdr, payload, sig []byte) string {
	enc := base64.RawURLEncoding
	buf := make([]byte, 0, enc.EncodedLen(len(hdr))+enc.EncodedLen(len(payload))+enc.EncodedLen(len(sig))+2)
	buf = enc.AppendEncode(buf, hdr)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, payload)
	buf = append(buf, '.')
	buf = enc.AppendEncode(buf, sig)
	return string(buf)
}
