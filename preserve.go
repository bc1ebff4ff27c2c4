package oidcauth

import (
	"html/template"
	"io"
	"mime"
	"net/http"
	"net/url"
	"strings"
)

// maxPreservedPost bounds a form body kept through a login round trip.
const maxPreservedPost = 64 << 10

// preservePost keeps a form that a browser posted after its session ended
// (a user who typed for an hour): the fields go into the tab's
// sessionStorage, the login runs, and the callback posts them again to the
// same URL. Nothing is stored on the server or in cookies. Bodies that are
// not plain forms, or larger than maxPreservedPost, cannot be kept: a page
// says so instead of dropping them silently.
func (lg *logins) preservePost(w http.ResponseWriter, r *http.Request) error {
	if !sameOrigin(r) {
		// Re-sending another site's post from our own page after login
		// would help a cross-site request forgery past the app's origin
		// checks. Such a post just leads to the login.
		return lg.begin(w, r, r.URL.RequestURI(), nil)
	}
	mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if mt != "application/x-www-form-urlencoded" {
		return lg.answer.page(w, r, http.StatusUnauthorized, "Your session has ended, and this kind of form cannot be kept while you sign in again. Sign in, then submit it again.", lg.loginPath+"?return_to="+url.QueryEscape(r.URL.RequestURI()), "Sign in")
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxPreservedPost+1))
	if err != nil {
		return lg.answer.fail(w, r, http.StatusBadRequest, "The form could not be read.", "")
	}
	if len(body) > maxPreservedPost {
		return lg.answer.page(w, r, http.StatusRequestEntityTooLarge, "Your session has ended, and the form is too large to keep while you sign in again. Copy what you typed, sign in, then submit it again.", lg.loginPath+"?return_to="+url.QueryEscape(r.URL.RequestURI()), "Sign in")
	}
	fields, err := formFields(string(body))
	if err != nil {
		return lg.answer.fail(w, r, http.StatusBadRequest, "The form is malformed.", "")
	}
	target, st, err := lg.start(w, r, r.URL.RequestURI(), true, nil)
	if st == nil {
		return err
	}
	return writeScriptPage(w, http.StatusOK, savePostTemplate, map[string]any{
		"Key":    postStorageKey(st.State),
		"Fields": fields,
		"Target": target,
	})
}

// formFields splits a form body into ordered name/value pairs (url.Values
// would lose the order, which some forms depend on).
func formFields(body string) ([][2]string, error) {
	var out [][2]string
	for _, part := range strings.Split(body, "&") {
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, "=")
		name, err := url.QueryUnescape(k)
		if err != nil {
			return nil, err
		}
		value, err := url.QueryUnescape(v)
		if err != nil {
			return nil, err
		}
		out = append(out, [2]string{name, value})
	}
	return out, nil
}

// sameOrigin reports whether the browser says the request came from a
// page of this site.
func sameOrigin(r *http.Request) bool {
	if site := r.Header.Get("Sec-Fetch-Site"); site != "" {
		return site == "same-origin"
	}
	if origin := r.Header.Get("Origin"); origin != "" {
		scheme := "http://"
		if r.TLS != nil {
			scheme = "https://"
		}
		return origin == scheme+r.Host
	}
	return false
}

func postStorageKey(state string) string { return "oidc_auth_post_" + state[:12] }

// resubmitPost answers a completed login whose attempt began with a form
// post: a page that posts the kept fields to the original URL. The
// session cookies are set on this response already.
func resubmitPost(w http.ResponseWriter, st *loginState, target string) error {
	return writeScriptPage(w, http.StatusOK, resubmitTemplate, map[string]any{
		"Key":    postStorageKey(st.State),
		"Target": target,
	})
}

func writeScriptPage(w http.ResponseWriter, status int, t *template.Template, data map[string]any) error {
	nonce := randomString(16)
	data["Nonce"] = nonce
	h := w.Header()
	h.Set("Content-Type", "text/html; charset=utf-8")
	h.Set("Cache-Control", "no-store")
	h.Set("Content-Security-Policy", "default-src 'none'; script-src 'nonce-"+nonce+"'; form-action 'self'; style-src 'unsafe-inline'")
	w.WriteHeader(status)
	return t.Execute(w, data)
}

var savePostTemplate = template.Must(template.New("save").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Signing in again</title></head>
<body>
<p>Your session has ended. Your form is kept in this tab while you sign in again.</p>
<noscript><p>JavaScript is off, so the form cannot be kept. <a href="{{.Target}}">Sign in</a>, then submit it again.</p></noscript>
<script nonce="{{.Nonce}}">
try { sessionStorage.setItem({{.Key}}, JSON.stringify({{.Fields}})); } catch (e) {}
location.replace({{.Target}});
</script>
</body></html>
`))

var resubmitTemplate = template.Must(template.New("resubmit").Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Sending your form</title></head>
<body>
<p id="status">Signed in. Sending your form again…</p>
<form id="resubmit" method="post" action="{{.Target}}"></form>
<noscript><p>JavaScript is off, so your form cannot be sent again. <a href="{{.Target}}">Continue</a></p></noscript>
<script nonce="{{.Nonce}}">
var raw = null;
try { raw = sessionStorage.getItem({{.Key}}); sessionStorage.removeItem({{.Key}}); } catch (e) {}
if (raw === null) {
  location.replace({{.Target}});
} else {
  var form = document.getElementById("resubmit");
  JSON.parse(raw).forEach(function (f) {
    var input = document.createElement("input");
    input.type = "hidden"; input.name = f[0]; input.value = f[1];
    form.appendChild(input);
  });
  form.submit();
}
</script>
</body></html>
`))
