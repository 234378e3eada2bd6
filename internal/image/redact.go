package image

import (
	"encoding/base64"
	"encoding/json"
	"net/url"
	"slices"
	"strings"
)

// redacted replaces a credential in text that leaves the image service.
const redacted = "<redacted>"

// credentialScrubber removes the credentials of auths from text, in every
// form a registry may have been sent them and quote them back (a token
// server its form, a proxy its headers, into the error body that
// go-containerregistry quotes): as they are, in a basic Authorization
// header, URL-encoded in a form, escaped in JSON. Any occurrence goes, so
// a very short secret may blank parts of words: better than showing it.
func credentialScrubber(auths ...*Auth) *strings.Replacer {
	var secrets []string
	add := func(s string) {
		if s == "" {
			return
		}
		j, _ := json.Marshal(s)
		secrets = append(secrets, s, url.QueryEscape(s), url.PathEscape(s), strings.Trim(string(j), `"`))
	}
	for _, a := range auths {
		if a == nil {
			continue
		}
		for _, s := range []string{a.Password, a.Auth, a.IdentityToken, a.RegistryToken} {
			add(s)
		}
		if a.Password != "" {
			add(base64.StdEncoding.EncodeToString([]byte(a.Username + ":" + a.Password)))
		}
		// auth is base64("user:password"): its password too.
		if dec, err := base64.StdEncoding.DecodeString(a.Auth); err == nil {
			if _, pw, ok := strings.Cut(string(dec), ":"); ok {
				add(pw)
			}
		}
	}
	// The longest first: a secret holding another is replaced whole.
	slices.SortFunc(secrets, func(a, b string) int { return len(b) - len(a) })
	secrets = slices.Compact(secrets)
	pairs := make([]string, 0, 2*len(secrets))
	for _, s := range secrets {
		pairs = append(pairs, s, redacted)
	}
	return strings.NewReplacer(pairs...)
}
