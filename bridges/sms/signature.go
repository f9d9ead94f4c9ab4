package sms

import (
	"crypto/hmac"
	"crypto/sha1"
	"encoding/base64"
	"net/url"
	"sort"
	"strings"
)

// signature computes a Twilio request signature: base64 of the HMAC-SHA1,
// keyed by the auth token, of the public URL followed by every POST
// parameter name and value, sorted by name (and a repeated parameter's
// distinct values sorted).
func signature(token, publicURL string, params url.Values) string {
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	b.WriteString(publicURL)
	for _, k := range keys {
		vs := append([]string(nil), params[k]...)
		sort.Strings(vs)
		for i, v := range vs {
			if i > 0 && v == vs[i-1] {
				continue
			}
			b.WriteString(k)
			b.WriteString(v)
		}
	}
	m := hmac.New(sha1.New, []byte(token))
	m.Write([]byte(b.String()))
	return base64.StdEncoding.EncodeToString(m.Sum(nil))
}

// validSignature reports whether sig is the signature of the request.
func validSignature(token, publicURL string, params url.Values, sig string) bool {
	if sig == "" || token == "" {
		return false
	}
	want := signature(token, publicURL, params)
	return hmac.Equal([]byte(want), []byte(sig))
}
