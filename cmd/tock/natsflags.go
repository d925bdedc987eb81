package main

// How tock authenticates to a NATS server it does not run itself: the
// flags and environment variables `tock serve --nats-url` and every client
// verb share, turned into nats.go options in one place (connOpts.options).
// Secrets come from files or the environment, never from a flag, so `ps`
// and pprof's cmdline cannot show them; no error names more of a file
// than its flag and path.

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"

	"github.com/nats-io/nats.go"

	"github.com/tockd/tock/internal/natsurl"
)

// Environment variables that carry credentials: there are no flags for
// them.
const (
	envNATSUser     = "TOCK_NATS_USER"
	envNATSPassword = "TOCK_NATS_PASSWORD"
	envNATSToken    = "TOCK_NATS_TOKEN"
)

// connHelp is the paragraph verb help adds about credentials.
const connHelp = "Credentials: --nats-creds FILE, --nats-nkey FILE, or from the environment $" + envNATSUser + "\n" +
	"with $" + envNATSPassword + ", or $" + envNATSToken + "; one of these at most (no password flags:\n" +
	"`ps` would show them). TLS: --tls-ca to verify the server, --tls-cert with --tls-key\n" +
	"for a client certificate."

// connOpts are the connection flags, and the credentials read from the
// environment (readEnv) before the options are built; an empty variable
// counts as unset.
type connOpts struct {
	creds, nkey            string
	tlsCert, tlsKey, tlsCA string
	user, password, token  string // from the environment
}

func addConnFlags(fs *flag.FlagSet, o *connOpts) {
	fs.StringVar(&o.creds, "nats-creds", "", "authenticate with this NATS credentials `file` (user JWT and nkey seed, as nsc writes it)")
	fs.StringVar(&o.nkey, "nats-nkey", "", "authenticate with the nkey user seed in this `file`")
	fs.StringVar(&o.tlsCert, "tls-cert", "", "client certificate `file` (PEM) for TLS; needs --tls-key")
	fs.StringVar(&o.tlsKey, "tls-key", "", "private key `file` (PEM) of --tls-cert")
	fs.StringVar(&o.tlsCA, "tls-ca", "", "verify the server's certificate with the CA certificates in this `file` (PEM); implies TLS")
}

// readEnv takes the credentials from the environment.
func (o *connOpts) readEnv(getenv func(string) string) {
	o.user, o.password, o.token = getenv(envNATSUser), getenv(envNATSPassword), getenv(envNATSToken)
}

// flagsGiven names the connection flags that were set.
func (o *connOpts) flagsGiven() []string {
	return named([]string{"--nats-creds", "--nats-nkey", "--tls-cert", "--tls-key", "--tls-ca"},
		[]bool{o.creds != "", o.nkey != "", o.tlsCert != "", o.tlsKey != "", o.tlsCA != ""})
}

// envGiven names the credential variables that were set.
func (o *connOpts) envGiven() []string {
	return named([]string{"$" + envNATSUser, "$" + envNATSPassword, "$" + envNATSToken},
		[]bool{o.user != "", o.password != "", o.token != ""})
}

func named(names []string, set []bool) []string {
	var g []string
	for i, n := range names {
		if set[i] {
			g = append(g, n)
		}
	}
	return g
}

// check validates the combination, without reading any file: one way to
// authenticate at most, a certificate with its key, a user with its
// password, and credentials in the URL or in the options but not both.
// Errors are usage errors.
func (o *connOpts) check(url string) error {
	if (o.tlsCert == "") != (o.tlsKey == "") {
		if o.tlsCert == "" {
			return usagef("--tls-key needs --tls-cert")
		}
		return usagef("--tls-cert needs --tls-key")
	}
	if (o.user == "") != (o.password == "") {
		if o.user != "" {
			return usagef("$%s is set but $%s is not: set both, or neither", envNATSUser, envNATSPassword)
		}
		return usagef("$%s is set but $%s is not: set both, or neither", envNATSPassword, envNATSUser)
	}
	ways := named([]string{"--nats-creds", "--nats-nkey", "$" + envNATSUser + " and $" + envNATSPassword, "$" + envNATSToken},
		[]bool{o.creds != "", o.nkey != "", o.user != "", o.token != ""})
	if len(ways) > 1 {
		return usagef("%s: give one way to authenticate", strings.Join(ways, ", "))
	}
	if len(ways) == 1 && natsurl.HasUserinfo(url) {
		return usagef("the NATS URL carries credentials and so does %s: give one", ways[0])
	}
	return nil
}

// options checks the combination and the files and returns the nats.go
// options that authenticate as they say. Files are parsed here, with
// nats.go's own functions, so that a bad one is named before connecting;
// nats.go reads them again at each (re)connect, so rotated files apply.
func (o *connOpts) options(url string) ([]nats.Option, error) {
	if err := o.check(url); err != nil {
		return nil, err
	}
	var opts []nats.Option
	switch {
	case o.creds != "":
		if err := checkCreds(o.creds); err != nil {
			return nil, err
		}
		opts = append(opts, nats.UserCredentials(o.creds))
	case o.nkey != "":
		if err := checkFile("--nats-nkey", o.nkey); err != nil {
			return nil, err
		}
		opt, err := nats.NkeyOptionFromSeed(o.nkey)
		if err != nil {
			return nil, usagef("--nats-nkey %s: %v", o.nkey, stripPath(err, o.nkey))
		}
		opts = append(opts, opt)
	case o.user != "":
		opts = append(opts, nats.UserInfo(o.user, o.password))
	case o.token != "":
		opts = append(opts, nats.Token(o.token))
	}
	if o.tlsCert != "" {
		if err := checkFile("--tls-cert", o.tlsCert); err != nil {
			return nil, err
		}
		if err := checkFile("--tls-key", o.tlsKey); err != nil {
			return nil, err
		}
		opt := nats.ClientCert(o.tlsCert, o.tlsKey)
		if err := opt(&nats.Options{}); err != nil {
			return nil, usagef("--tls-cert %s --tls-key %s: %v", o.tlsCert, o.tlsKey, err)
		}
		opts = append(opts, opt)
	}
	if o.tlsCA != "" {
		if err := checkFile("--tls-ca", o.tlsCA); err != nil {
			return nil, err
		}
		opt := nats.RootCAs(o.tlsCA)
		if err := opt(&nats.Options{}); err != nil {
			return nil, usagef("--tls-ca %s: no PEM certificate in it", o.tlsCA)
		}
		opts = append(opts, opt)
	}
	return opts, nil
}

// checkFile names the flag and the path of a file that cannot be read.
func checkFile(flagName, path string) error {
	f, err := os.Open(path)
	if err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			err = pe.Err
		}
		return usagef("%s %s: %v", flagName, path, err)
	}
	defer f.Close()
	if st, err := f.Stat(); err == nil && st.IsDir() {
		return usagef("%s %s: is a directory", flagName, path)
	}
	return nil
}

// checkCreds parses a credentials file as nats.go will: a user JWT and a
// user nkey seed that can sign.
func checkCreds(path string) error {
	if err := checkFile("--nats-creds", path); err != nil {
		return err
	}
	var no nats.Options
	if err := nats.UserCredentials(path)(&no); err != nil {
		return usagef("--nats-creds %s: %v", path, err)
	}
	jwt, err := no.UserJWT()
	// nkeys returns a file without the JWT markers whole, as the JWT: say
	// so without repeating it. A JWT's header is base64 JSON: "eyJ".
	if err != nil || !strings.HasPrefix(jwt, "eyJ") || strings.Count(jwt, ".") != 2 || strings.ContainsAny(jwt, " \t\r\n") {
		return usagef("--nats-creds %s: no user JWT in it (want a .creds file as nsc writes it)", path)
	}
	if _, err := no.SignatureCB([]byte("tock")); err != nil {
		return usagef("--nats-creds %s: no user nkey seed in it: %v", path, stripPath(errors.Unwrap(err), path))
	}
	return nil
}

// stripPath keeps nats.go from naming the path a second time.
func stripPath(err error, path string) string {
	if err == nil {
		return "unreadable"
	}
	var pe *os.PathError
	if errors.As(err, &pe) {
		return pe.Err.Error()
	}
	return strings.ReplaceAll(err.Error(), fmt.Sprintf("%q", path), "the file")
}

// warnConnEnv logs what cannot be kept secret or is ignored: credentials
// in --nats-url, which `ps` shows to every user of the machine, and
// credential variables that serve without --nats-url does not use.
func warnConnEnv(log *slog.Logger, url string, getenv func(string) string) {
	if url == "" {
		var o connOpts
		o.readEnv(getenv)
		if g := o.envGiven(); len(g) > 0 {
			log.Warn(strings.Join(g, ", ") + " ignored without --nats-url")
		}
		return
	}
	if natsurl.HasUserinfo(url) {
		log.Warn("--nats-url carries credentials, which ps and /proc show to anyone on this machine; set $" +
			envNATSUser + " and $" + envNATSPassword + " (or $" + envNATSToken + ") instead")
	}
}

// redactedCmdline is pprof's cmdline handler with NATS URLs redacted.
func redactedCmdline(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	io.WriteString(w, strings.Join(redactArgs(os.Args), "\x00"))
}

// redactArgs redacts the userinfo of every URL among args, also in
// --flag=URL.
func redactArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if name, val, ok := strings.Cut(a, "="); ok && strings.HasPrefix(name, "-") {
			out[i] = name + "=" + natsurl.Redact(val)
		} else {
			out[i] = natsurl.Redact(a)
		}
	}
	return out
}
