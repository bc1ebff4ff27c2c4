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
	rest, ok := strings.CutPrefix(unprefixed(name), c.name)
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
	var kept []string
	changed := false
	for i, line := range lines {
		out := c.withoutOwnCookies(line)
		if !changed {
			if out == line {
				continue
			}
			// The lines before are kept as they are; the capacity limit
			// keeps appends off the request's own slice.
			changed, kept = true, lines[:i:i]
		}
		if out != "" {
			kept = append(kept, out)
		}
	}
	switch {
	case !changed:
	case len(kept) == 0:
		delete(h, "Cookie")
	default:
		h["Cookie"] = kept
	}
}

// withoutOwnCookies returns a Cookie header line without this codec's
// cookies ("" when none is left).
func (c *Codec) withoutOwnCookies(line string) string {
	if !c.hasOwnCookie(line) {
		return line
	}
	var b strings.Builder
	for rest, more := line, true; more; {
		var part, name string
		part, name, rest, more = nextCookie(rest)
		if c.dropped(part, name) {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		b.WriteString(part)
	}
	return b.String()
}

// hasOwnCookie reports whether a Cookie header line has a part that
// withoutOwnCookies drops, reading only the names.
func (c *Codec) hasOwnCookie(line string) bool {
	for more := true; more; {
		var part, name string
		part, name, line, more = nextCookie(line)
		if c.dropped(part, name) {
			return true
		}
	}
	return false
}

// dropped reports whether withoutOwnCookies leaves a part out: an empty
// part, or one of this codec's cookies.
func (c *Codec) dropped(part, name string) bool {
	return part == "" || c.isOwnCookie(name)
}

// hasLoopCookie reports whether a Cookie header may hold the login loop
// counter (in any spelling), without allocating: it reads only the names,
// jumping over each value.
func (c *Codec) hasLoopCookie(h http.Header) bool {
	for _, line := range h["Cookie"] {
		for more := true; more; {
			var name string
			_, name, line, more = nextCookie(line)
			if name = unprefixed(name); len(name) == len(c.name)+len("_lg") &&
				strings.HasPrefix(name, c.name) && strings.HasSuffix(name, "_lg") {
				return true
			}
		}
	}
	return false
}

// nextCookie splits the first cookie off a Cookie header line: the part
// before the first ';' and its name, both trimmed, and the rest of the
// line. It jumps over the value (strings.Cut finds a one-byte separator
// with strings.IndexByte) and allocates nothing.
func nextCookie(line string) (part, name, rest string, more bool) {
	part, rest, more = strings.Cut(line, ";")
	part = strings.TrimSpace(part)
	name, _, _ = strings.Cut(part, "=")
	return part, strings.TrimSpace(name), rest, more
}

// unprefixed is a cookie name without its __Host- or __Secure- prefix.
func unprefixed(name string) string {
	if rest, ok := strings.CutPrefix(name, "__Host-"); ok {
		return rest
	}
	return strings.TrimPrefix(name, "__Secure-")
}
