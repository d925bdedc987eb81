package natsurl

import "testing"

func TestRedact(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"nats://127.0.0.1:4222", "nats://127.0.0.1:4222"},
		{"", ""},
		{"nats://alice:SECRET@127.0.0.1:4222", "nats://alice:xxxxx@127.0.0.1:4222"},
		{"tls://alice:SECRET@nats.example:4222/", "tls://alice:xxxxx@nats.example:4222/"},
		{"nats://alice:@h:1", "nats://alice:xxxxx@h:1"},
		{"nats://SECRET@h:4222", "nats://h:4222"},         // a token
		{"nats://a:b%40SECRET@h:1", "nats://a:xxxxx@h:1"}, // escaped @ in the password
		{"nats://a:b@SECRET@h:1", "nats://a:xxxxx@h:1"},   // unescaped: the last @ ends userinfo
		{"nats://a:SE%zzCRET@h:1", "nats://xxxxx@h:1"},    // bad escape: does not parse
		{"a:SECRET@h:4222", "xxxxx@h:4222"},               // no scheme
		{"nats://u:SECRET@a:1,nats://TOKEN@b:2,nats://c:3", "nats://u:xxxxx@a:1,nats://b:2,nats://c:3"},
		{"nats://h:1/x@y", "nats://h:1/x@y"}, // an @ past the host is no userinfo
	} {
		if got := Redact(tc.in); got != tc.want {
			t.Errorf("Redact(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

func TestHasUserinfo(t *testing.T) {
	for in, want := range map[string]bool{
		"nats://127.0.0.1:4222":     false,
		"nats://a:b@h:1":            true,
		"nats://tok@h:1":            true,
		"nats://h:1,nats://tok@h:2": true,
		"nats://a:SE%zzCRET@h:1":    true,
		"nats://h:1/x@y":            false,
		"":                          false,
	} {
		if got := HasUserinfo(in); got != want {
			t.Errorf("HasUserinfo(%q) = %v, want %v", in, got, want)
		}
	}
}
