package oidcauth

// The cookie codec's own tests are in internal/cookie.

const testCookieSecret = "0123456789abcdef0123456789abcdef"
