package cookie

import (
	"net/http"
	"strings"
)

// isOwnCookie reports whether a cookie name is one this codec sets: the
// session and its chunks, the ID token cookie and its chunks, the state
// cookies and the login loop counter, with or without a __Host- or
// __Secure- prefix.
func (c *Codec) isOwnCookie(name string) bool {
	if rest, ok := strings.CutPrefix(name, "__Host-"); ok {
		name = rest
	} else if rest, ok := strings.CutPrefix(name, "__Secure-"); ok {
		name = rest
	}
	rest, ok := strings.CutPrefix(name, c.name)
	if !ok {
		return false
	}
	switch {
	case rest == "" || rest == "_idt" || rest == "_lg" || strings.HasPrefix(rest, "_s_"):
		return true
	case strings.HasPrefix(rest, "_idt_"):
		rest = rest[len("_idt_"):]
	case strings.HasPrefix(rest, "_"):
		rest = rest[1:]
	default:
		return false
	}
	if rest == "" {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if rest[i] < '0' || rest[i] > '9' {
			return false
		}
	}
	return true
}

// StripOwnCookies removes this codec's cookies (session and its chunks, ID
// token, states, login loop counter, in every spelling) from request
// headers before the request goes on; every other cookie is passed as it
// came. A request that carries only the codec's cookies costs no
// allocation.
func (c *Codec) StripOwnCookies(h http.Header) {
	lines := h["Cookie"]
	mine := false
	for _, line := range lines {
		mine = mine || strings.Contains(line, c.name)
	}
	if !mine {
		return
	}
	var kept []string
	for _, line := range lines {
		if out := c.withoutOwnCookies(line); out != "" {
			kept = append(kept, out)
		}
	}
	if len(kept) == 0 {
		delete(h, "Cookie")
		return
	}
	h["Cookie"] = kept
}

// withoutOwnCookies returns a Cookie header line without this codec's
// cookies ("" when none is left).
func (c *Codec) withoutOwnCookies(line string) string {
	var b strings.Builder
	removed := false
	for rest, more := line, true; more; {
		var part string
		part, rest, more = strings.Cut(rest, ";")
		part = strings.TrimSpace(part)
		name, _, _ := strings.Cut(part, "=")
		if part == "" || c.isOwnCookie(strings.TrimSpace(name)) {
			removed = true
			continue
		}
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		b.WriteString(part)
	}
	if !removed {
		return line
	}
	return b.String()
}

// hasCookieNamed reports whether a Cookie header may hold a cookie whose
// name ends in base+suffix ("=" included), without allocating.
func hasCookieNamed(h http.Header, base, suffix string) bool {
	for _, line := range h["Cookie"] {
		for i := 0; ; {
			j := strings.Index(line[i:], base)
			if j < 0 {
				break
			}
			i += j + len(base)
			if strings.HasPrefix(line[i:], suffix) {
				return true
			}
		}
	}
	return false
}
