package cookie

import (
	"fmt"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
)

// A cookie's value is kept under this many bytes; larger values are split
// into chunks named <name>, <name>_1, <name>_2, ...
const (
	maxChunkLen = 3800
	maxChunks   = 8
)

func chunkName(name string, i int) string {
	if i == 0 {
		return name
	}
	return name + "_" + strconv.Itoa(i)
}

// readChunked reassembles a value written by writeChunked. The first
// cookie carries the chunk count as "<n>." when there is more than one.
func readChunked(r *http.Request, name string) (string, int, bool) {
	first, err := r.Cookie(name)
	if err != nil {
		return "", 0, false
	}
	v := first.Value
	dot := strings.IndexByte(v, '.')
	if dot < 0 {
		return v, 1, true
	}
	n, err := strconv.Atoi(v[:dot])
	if err != nil || n < 2 || n > maxChunks {
		return "", 1, false
	}
	var b strings.Builder
	b.WriteString(v[dot+1:])
	for i := 1; i < n; i++ {
		c, err := r.Cookie(chunkName(name, i))
		if err != nil {
			return "", n, false
		}
		b.WriteString(c.Value)
	}
	return b.String(), n, true
}

// firstCookieValue returns the value of the first cookie named name in
// h's Cookie lines, split and trimmed as net/http does, without parsing the
// other cookies or checking the value's bytes: the caller must accept only
// a value it knows. ok is false when there is no such cookie.
func firstCookieValue(h http.Header, name string) (string, bool) {
	for _, line := range h["Cookie"] {
		for more := true; more; {
			var part string
			part, line, more = strings.Cut(line, ";")
			part = textproto.TrimString(part)
			n, v, _ := strings.Cut(part, "=")
			if textproto.TrimString(n) == name {
				return v, true
			}
		}
	}
	return "", false
}

// writeChunked sets value under name, split into chunks when it is large,
// and expires chunks of an older, longer value that the request carried.
func writeChunked(w http.ResponseWriter, r *http.Request, name, path, value string, maxAge int) error {
	n := (len(value) + maxChunkLen - 1) / maxChunkLen
	if n > maxChunks {
		return fmt.Errorf("cookie value of %d bytes exceeds %d chunks", len(value), maxChunks)
	}
	if n <= 1 {
		http.SetCookie(w, newCookie(r, name, path, value, maxAge))
	} else {
		for i := range n {
			part := value[i*maxChunkLen : min(len(value), (i+1)*maxChunkLen)]
			if i == 0 {
				part = strconv.Itoa(n) + "." + part
			}
			http.SetCookie(w, newCookie(r, chunkName(name, i), path, part, maxAge))
		}
	}
	for i := max(n, 1); i < maxChunks; i++ {
		if _, err := r.Cookie(chunkName(name, i)); err == nil {
			http.SetCookie(w, newCookie(r, chunkName(name, i), path, "", -1))
		}
	}
	return nil
}

// clearChunked expires every chunk of name that the request carried.
func clearChunked(w http.ResponseWriter, r *http.Request, name, path string) {
	for i := range maxChunks {
		if _, err := r.Cookie(chunkName(name, i)); err == nil {
			http.SetCookie(w, newCookie(r, chunkName(name, i), path, "", -1))
		}
	}
}
