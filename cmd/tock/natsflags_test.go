package main

import (
	"bytes"
	"log/slog"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
)

func TestConnOptsCheck(t *testing.T) {
	for _, c := range []struct {
		name string
		o    connOpts
		url  string
		want string // "" : accepted
	}{
		{name: "nothing", url: "nats://127.0.0.1:4222"},
		{name: "creds", o: connOpts{creds: "a.creds"}},
		{name: "user and password", o: connOpts{user: "u", password: "p"}},
		{name: "token", o: connOpts{token: "t"}},
		{name: "cert with key and ca", o: connOpts{tlsCert: "c", tlsKey: "k", tlsCA: "ca", nkey: "n"}},
		{name: "URL credentials alone", url: "nats://u:p@127.0.0.1:4222"},
		{name: "cert without key", o: connOpts{tlsCert: "c"}, want: "--tls-cert needs --tls-key"},
		{name: "key without cert", o: connOpts{tlsKey: "k"}, want: "--tls-key needs --tls-cert"},
		{name: "user without password", o: connOpts{user: "u"}, want: "$TOCK_NATS_USER is set but $TOCK_NATS_PASSWORD is not"},
		{name: "password without user", o: connOpts{password: "p"}, want: "$TOCK_NATS_PASSWORD is set but $TOCK_NATS_USER is not"},
		{name: "creds and nkey", o: connOpts{creds: "a", nkey: "b"}, want: "--nats-creds, --nats-nkey: give one way"},
		{name: "nkey and token", o: connOpts{nkey: "b", token: "t"}, want: "--nats-nkey, $TOCK_NATS_TOKEN: give one way"},
		{name: "user and token", o: connOpts{user: "u", password: "p", token: "t"}, want: "give one way"},
		{name: "URL and creds", o: connOpts{creds: "a"}, url: "nats://u:p@127.0.0.1:4222", want: "the NATS URL carries credentials and so does --nats-creds"},
		{name: "URL token and env user", o: connOpts{user: "u", password: "p"}, url: "nats://tok@127.0.0.1:4222", want: "so does $TOCK_NATS_USER"},
	} {
		err := c.o.check(c.url)
		switch {
		case c.want == "" && err != nil:
			t.Errorf("%s: %v", c.name, err)
		case c.want != "" && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		case err != nil && (strings.Contains(err.Error(), "\"p\"") || strings.Contains(err.Error(), ":p@")):
			t.Errorf("%s: the error shows the password: %v", c.name, err)
		}
	}
}

func TestRedactArgs(t *testing.T) {
	args := []string{"tock", "serve", "--nats-url", "nats://tock:s3cret@10.0.0.1:4222", "--nats-url=tls://tok3n@h:4222", "-nats-url=nats://h:4222", "--data", "/x"}
	got := strings.Join(redactArgs(args), " ")
	for _, secret := range []string{"s3cret", "tok3n"} {
		if strings.Contains(got, secret) {
			t.Errorf("redacted args show %q: %s", secret, got)
		}
	}
	for _, keep := range []string{"tock serve --nats-url", "10.0.0.1:4222", "--nats-url=tls://", "-nats-url=nats://h:4222", "--data /x"} {
		if !strings.Contains(got, keep) {
			t.Errorf("redacted args lost %q: %s", keep, got)
		}
	}
}

// The pprof endpoint serves the redacted command line, NUL-separated as
// net/http/pprof does.
func TestPprofCmdlineRedacted(t *testing.T) {
	saved := os.Args
	os.Args = []string{"tock", "serve", "--nats-url", "nats://tock:s3cret@127.0.0.1:4222"}
	defer func() { os.Args = saved }()
	rec := httptest.NewRecorder()
	redactedCmdline(rec, httptest.NewRequest("GET", "/debug/pprof/cmdline", nil))
	body := rec.Body.String()
	if strings.Contains(body, "s3cret") || !strings.HasPrefix(body, "tock\x00serve\x00--nats-url\x00nats://tock:") {
		t.Fatalf("cmdline: %q", body)
	}
}

func TestWarnConnEnv(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	for _, c := range []struct {
		name, url string
		env       map[string]string
		want      string // "": no warning
	}{
		{name: "quiet", url: "nats://h:4222"},
		{name: "quiet embedded", url: ""},
		{name: "URL credentials", url: "nats://u:p4ss@h:4222", want: "--nats-url carries credentials"},
		{name: "env without URL", env: map[string]string{envNATSToken: "t0ken"}, want: "$TOCK_NATS_TOKEN ignored without --nats-url"},
		{name: "env with URL", url: "nats://h:4222", env: map[string]string{envNATSUser: "u", envNATSPassword: "p4ss"}},
	} {
		var buf bytes.Buffer
		warnConnEnv(slog.New(slog.NewTextHandler(&buf, nil)), c.url, env(c.env))
		out := buf.String()
		if (c.want == "") != (out == "") || !strings.Contains(out, c.want) {
			t.Errorf("%s: logged %q, want %q", c.name, out, c.want)
		}
		if strings.Contains(out, "p4ss") || strings.Contains(out, "t0ken") {
			t.Errorf("%s: the warning shows a secret: %s", c.name, out)
		}
	}
}
