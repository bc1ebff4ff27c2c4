package oidc

import (
	"errors"
	"io"
	"net/http"
)

// maxIdPResponse bounds every response body read from the IdP (discovery,
// JWKS, token, revocation): no document they serve comes near it, and a
// hostile or broken IdP must not make Caddy buffer without limit.
const maxIdPResponse = 1 << 20

type limitedTransport struct{ base http.RoundTripper }

func (t limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := t.base.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{ReadCloser: resp.Body, left: maxIdPResponse}
	return resp, nil
}

// limitedBody fails a read past its limit, rather than truncating, so a
// cut-off document is an error and not a different document.
type limitedBody struct {
	io.ReadCloser
	left int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	if b.left <= 0 {
		return 0, errors.New("identity provider response larger than 1 MiB")
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	return n, err
}
