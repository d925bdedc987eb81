// Package natsurl keeps NATS credentials out of what tock prints: every
// server URL that reaches a log line or an error goes through Redact.
package natsurl

import (
	"net/url"
	"strings"
)

// Mask replaces a password in a redacted URL, as net/url's Redacted does.
const Mask = "xxxxx"

// Redact returns the server URL (or comma-separated list of them, as
// nats.Connect takes) with its secrets removed: user:password@ keeps the
// user and masks the password, and a userinfo without a password, which
// nats.go sends as a token, is dropped whole. A URL that does not parse
// but has an "@" loses everything before it, since what it holds cannot
// be told apart.
func Redact(s string) string {
	if !strings.Contains(s, "@") {
		return s
	}
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = redactOne(p)
	}
	return strings.Join(parts, ",")
}

func redactOne(s string) string {
	at := strings.LastIndex(s, "@")
	if at < 0 {
		return s
	}
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil || u.Host == "" {
		scheme, _, ok := strings.Cut(s[:at], "://")
		if !ok {
			return Mask + s[at:]
		}
		return scheme + "://" + Mask + s[at:]
	}
	if u.User == nil {
		return s
	}
	if _, ok := u.User.Password(); ok {
		u.User = url.UserPassword(u.User.Username(), Mask)
	} else {
		u.User = nil
	}
	return u.String()
}

// HasUserinfo reports whether any URL of s carries a user, password or
// token (or has an "@" where a userinfo would be, if it does not parse).
func HasUserinfo(s string) bool {
	for _, p := range strings.Split(s, ",") {
		if !strings.Contains(p, "@") {
			continue
		}
		u, err := url.Parse(strings.TrimSpace(p))
		if err != nil || u.Host == "" || u.User != nil {
			return true
		}
	}
	return false
}
