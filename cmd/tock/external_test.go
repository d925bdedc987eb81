package main

// `tock serve --nats-url` and the client verbs against secured external
// NATS servers started by the tests: user and password from the
// environment (tock's user holding only the permissions docs/SECURITY.md
// lists), an nkey seed, a creds file in operator mode, TLS with client
// certificates. Each checks a schedule → delivery round trip, that a wrong
// or missing credential fails clearly, and that no secret is printed.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nkeys"

	"github.com/tockd/tock/internal/natstest"
	"github.com/tockd/tock/msgid"
)

// extWait bounds each wait of these tests; each test stays well under it.
const extWait = 5 * time.Second

// tockPermissions are the permissions docs/SECURITY.md says tock's own
// user needs on an external server, targets aside: TestExternalUserPassword
// runs tock with exactly these.
func tockPermissions(targets ...string) *server.Permissions {
	return &server.Permissions{
		Publish: &server.SubjectPermission{Allow: append([]string{
			"$JS.API.STREAM.NAMES",
			// Which streams capture targets (delivery/capture.go).
			"$JS.API.STREAM.LIST",
			"$JS.API.STREAM.*.TOCK_JOURNAL",
			"$JS.API.STREAM.MSG.GET.TOCK_JOURNAL",
			"$JS.API.DIRECT.GET.TOCK_JOURNAL",
			"$JS.API.DIRECT.GET.TOCK_JOURNAL.>",
			"tock.journal.>",
			// Refused journal records are copied here (docs/SECURITY.md).
			"$JS.API.STREAM.*.TOCK_QUARANTINE",
			"tock.quarantine.>",
			// Dead letters: written by deliveries, read and deleted by redrives.
			"$JS.API.STREAM.*.TOCK_DLQ", "$JS.API.STREAM.MSG.*.TOCK_DLQ", "$JS.API.DIRECT.GET.TOCK_DLQ.>", "tock.dead.>",
		}, targets...)},
		Subscribe: &server.SubjectPermission{Allow: []string{
			"_INBOX.>", "tock.schedule.>", "tock.cancel.*", "tock.get.*", "tock.redrive.*", "tock.status", "$SRV.>",
			"$JS.EVENT.ADVISORY.STREAM.CREATED.*", "$JS.EVENT.ADVISORY.STREAM.UPDATED.*", "$JS.EVENT.ADVISORY.STREAM.DELETED.*",
		}},
		Response: &server.ResponsePermission{MaxMsgs: 1, Expires: time.Minute},
	}
}

// deadLetterPermissions are what docs/SECURITY.md says tock's user needs
// on top of tockPermissions for `--dead-letter STREAM:CONSUMER` on each of
// streams: TestExternalConsumerDeadLetters runs tock with exactly these.
func deadLetterPermissions(p *server.Permissions, streams ...string) *server.Permissions {
	p.Publish.Allow = append(p.Publish.Allow,
		"$JS.API.STREAM.*.TOCK_DLQ_ADVISORIES", "$JS.API.CONSUMER.*.TOCK_DLQ_ADVISORIES.>",
		"$JS.API.CONSUMER.MSG.NEXT.TOCK_DLQ_ADVISORIES.tock", "$JS.ACK.TOCK_DLQ_ADVISORIES.>")
	for _, s := range streams {
		p.Publish.Allow = append(p.Publish.Allow, "$JS.API.STREAM.INFO."+s, "$JS.API.STREAM.MSG.GET."+s, "$JS.API.STREAM.MSG.DELETE."+s)
	}
	return p
}

// extServe is `tock serve ARGS...` run in-process, as main runs it.
type extServe struct {
	stdout, stderr syncBuffer
	code           chan int
	cancel         context.CancelFunc
}

// serveExt starts `tock serve ARGS...` and returns once it logged "tock
// ready", or, with wantFail, once it exited (status in code).
func serveExt(t *testing.T, wantFail bool, args ...string) (*extServe, int) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	s := &extServe{code: make(chan int, 1), cancel: cancel}
	args = append([]string{"serve", "--shutdown-timeout", "3s"}, args...)
	go func() { s.code <- run(ctx, args, strings.NewReader(""), &s.stdout, &s.stderr) }()
	deadline := time.After(extWait)
	for {
		select {
		case c := <-s.code:
			cancel()
			if !wantFail {
				t.Fatalf("tock serve exited with %d: %s", c, s.stderr.String())
			}
			return s, c
		case <-deadline:
			cancel()
			t.Fatalf("tock serve neither ready nor failed: %s", s.stderr.String())
		case <-time.After(5 * time.Millisecond):
		}
		if !wantFail && strings.Contains(s.stderr.String(), `msg="tock ready"`) {
			t.Cleanup(func() { s.stop(t) })
			return s, 0
		}
	}
}

func (s *extServe) stop(t *testing.T) {
	t.Helper()
	s.cancel()
	select {
	case c := <-s.code:
		if c != 0 {
			t.Errorf("tock serve exited with %d: %s", c, s.stderr.String())
		}
	case <-time.After(extWait):
		t.Errorf("tock serve did not stop: %s", s.stderr.String())
	}
	select {
	case s.code <- 0: // a second stop returns at once
	default:
	}
}

// roundTrip watches ext.<name> and schedules a message to it, both
// through client verbs with conn (flags after --nats-url url), and checks
// that it is delivered and get says so. It returns the message's id.
func roundTrip(t *testing.T, url, name string, conn ...string) string {
	t.Helper()
	target := "ext." + name
	ctx, cancel := context.WithTimeout(context.Background(), extWait)
	defer cancel()
	w := &cliWatch{code: make(chan int, 1), stop: cancel}
	wargs := append([]string{"watch", "--nats-url", url, "--count", "1", "--for", extWait.String(), target}, conn...)
	go func() { w.code <- run(ctx, wargs, strings.NewReader(""), &w.stdout, &w.stderr) }()
	w.waitSubscribed(t, func() (int, bool) {
		select {
		case c := <-w.code:
			return c, true
		default:
			return 0, false
		}
	})
	res := cli(t, "", append([]string{"schedule", "--nats-url", url, "--to", target, "--in", "100ms", "round trip"}, conn...)...)
	r := decodeReply(t, res, "id", "target", "deliver_at")
	if c := w.wait(t); c != 0 {
		t.Fatalf("watch: exit %d, stderr %q", c, w.stderr.String())
	}
	if lines := watchLines(t, w.stdout.String()); len(lines) != 1 || lines[0].id != r.ID || lines[0].body != "round trip" {
		t.Fatalf("watch printed %q, want %s", w.stdout.String(), r.ID)
	}
	g := decodeGet(t, cli(t, "", append([]string{"get", "--nats-url", url, r.ID}, conn...)...))
	if g.State != "delivered" {
		t.Errorf("get after delivery: %+v", g)
	}
	return r.ID
}

// noSecret fails if any secret occurs in out.
func noSecret(t *testing.T, what, out string, secrets ...string) {
	t.Helper()
	for _, s := range secrets {
		if s != "" && strings.Contains(out, s) {
			t.Errorf("%s shows a secret (%q): %s", what, s, out)
		}
	}
}

// failsWith checks a command's failure: status, the text it must contain,
// and no secret anywhere in its output.
func failsWith(t *testing.T, what string, res cliResult, code int, want string, secrets ...string) {
	t.Helper()
	if res.code != code || !strings.Contains(res.stderr, want) {
		t.Errorf("%s: %v; want exit %d and %q", what, res, code, want)
	}
	noSecret(t, what, res.stdout+res.stderr, secrets...)
}

func writeFile(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// unknownID is a valid id nobody scheduled: a verb that gets through is
// answered 404.
var unknownID = msgid.New(time.Now().Add(time.Hour).UnixMilli(), 1).String()

// TestExternalUserPassword: tock's user (only the documented permissions)
// and the producer's user come from $TOCK_NATS_USER/$TOCK_NATS_PASSWORD,
// or the URL; the secrets never show, also when the password is wrong.
func TestExternalUserPassword(t *testing.T) {
	const tockPass, appPass, wrongPass = "tock-SECRET-1f3a", "app-SECRET-77c2", "WRONG-SECRET-9d0e"
	ns := natstest.StartOptions(t, &server.Options{JetStream: true, Users: []*server.User{
		{Username: "tock", Password: tockPass, Permissions: tockPermissions("ext.>")},
		{Username: "app", Password: appPass},
	}})
	url := ns.ClientURL()
	secrets := []string{tockPass, appPass, wrongPass}

	t.Setenv(envNATSUser, "tock")
	t.Setenv(envNATSPassword, tockPass)
	// Short slots and retention, so that the journal purge runs too.
	short := []string{"--slot-width", "1s", "--retention", "1s", "--horizon", "1s"}
	s, _ := serveExt(t, false, append([]string{"--nats-url", url}, short...)...)
	t.Setenv(envNATSUser, "app")
	t.Setenv(envNATSPassword, appPass)
	id := roundTrip(t, url, "env")
	checkTockPermissions(t, ns, appPass, id)
	s.stop(t)
	noSecret(t, "serve (env)", s.stdout.String()+s.stderr.String(), secrets...)
	// A denied publish or subscription shows only as an asynchronous error.
	if strings.Contains(s.stderr.String(), "NATS error") {
		t.Errorf("tock with the documented permissions got NATS errors:\n%s", s.stderr.String())
	}

	// In the URL: redacted in the log, and a warning that ps shows it.
	os.Unsetenv(envNATSUser)
	os.Unsetenv(envNATSPassword)
	withPass := strings.Replace(url, "nats://", "nats://tock:"+tockPass+"@", 1)
	s, _ = serveExt(t, false, append([]string{"--nats-url", withPass}, short...)...)
	out := s.stderr.String()
	if !strings.Contains(out, "nats_url=nats://tock:xxxxx@127.0.0.1:") || !strings.Contains(out, "url=nats://tock:xxxxx@") ||
		!strings.Contains(out, "--nats-url carries credentials") {
		t.Errorf("serve log does not show the redacted URL and the warning:\n%s", out)
	}
	appURL := strings.Replace(url, "nats://", "nats://app:"+appPass+"@", 1)
	roundTrip(t, appURL, "url")
	s.stop(t)
	noSecret(t, "serve (URL)", s.stdout.String()+s.stderr.String(), secrets...)

	// Wrong and missing passwords.
	wrongURL := strings.Replace(url, "nats://", "nats://tock:"+wrongPass+"@", 1)
	s, code := serveExt(t, true, "--nats-url", wrongURL)
	failsWith(t, "serve, wrong password in the URL", cliResult{code, s.stdout.String(), s.stderr.String()}, 1,
		"connect to nats://tock:xxxxx@127.0.0.1:", secrets...)
	failsWith(t, "serve, wrong password in the URL", cliResult{code, s.stdout.String(), s.stderr.String()}, 1,
		"Authorization Violation", secrets...)
	res := cli(t, "", "get", "--nats-url", wrongURL, unknownID)
	failsWith(t, "get, wrong password in the URL", res, 1, "connect to nats://tock:xxxxx@127.0.0.1:", secrets...)

	t.Setenv(envNATSUser, "tock")
	t.Setenv(envNATSPassword, wrongPass)
	s, code = serveExt(t, true, "--nats-url", url)
	failsWith(t, "serve, wrong $"+envNATSPassword, cliResult{code, s.stdout.String(), s.stderr.String()}, 1,
		"connect to "+url+": nats: Authorization Violation", secrets...)
	res = cli(t, "", "get", "--nats-url", url, unknownID)
	failsWith(t, "get, wrong $"+envNATSPassword, res, 1, "connect to "+url+": nats: Authorization Violation", secrets...)
	os.Unsetenv(envNATSUser)
	os.Unsetenv(envNATSPassword)
	res = cli(t, "", "get", "--nats-url", url, unknownID)
	failsWith(t, "get without a password", res, 1, "Authorization Violation", secrets...)
	// A token in the URL is dropped whole from the error.
	res = cli(t, "", "get", "--nats-url", strings.Replace(url, "nats://", "nats://"+wrongPass+"@", 1), unknownID)
	failsWith(t, "get, a wrong token in the URL", res, 1, "connect to "+url+": ", secrets...)
}

// TestExternalConsumerDeadLetters: --dead-letter on an external server,
// tock's user holding only the documented permissions: a message its
// consumer gave up on is moved into TOCK_DLQ and out of its work queue.
func TestExternalConsumerDeadLetters(t *testing.T) {
	const tockPass, appPass = "tock-SECRET-5e1b", "app-SECRET-0c4d"
	ns := natstest.StartOptions(t, &server.Options{JetStream: true, Users: []*server.User{
		{Username: "tock", Password: tockPass, Permissions: deadLetterPermissions(tockPermissions(), "JOBS")},
		{Username: "app", Password: appPass},
	}})
	url := ns.ClientURL()
	nc, err := nats.Connect(url, nats.UserInfo("app", appPass))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx, cancel := context.WithTimeout(context.Background(), extWait)
	defer cancel()
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "JOBS", Subjects: []string{"jobs.>"}, Retention: jetstream.WorkQueuePolicy})
	if err != nil {
		t.Fatal(err)
	}
	cons, err := stream.CreateConsumer(ctx, jetstream.ConsumerConfig{Durable: "workers", AckPolicy: jetstream.AckExplicitPolicy, MaxDeliver: 1})
	if err != nil {
		t.Fatal(err)
	}
	t.Setenv(envNATSUser, "tock")
	t.Setenv(envNATSPassword, tockPass)
	s, _ := serveExt(t, false, "--nats-url", url, "--dead-letter", "JOBS:workers")
	if _, err := js.Publish(ctx, "jobs.resize", []byte("poison")); err != nil {
		t.Fatal(err)
	}
	var dead jetstream.Stream
	for deadline := time.Now().Add(extWait); ; {
		for range 2 { // the second fetch makes the server announce max_deliver
			b, err := cons.Fetch(1, jetstream.FetchMaxWait(200*time.Millisecond))
			if err != nil {
				t.Fatal(err)
			}
			for m := range b.Messages() {
				m.Nak()
			}
		}
		if dead, err = js.Stream(ctx, "TOCK_DLQ"); err == nil && dead.CachedInfo().State.Msgs == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no dead letter (err %v): %s", err, s.stderr.String())
		}
	}
	m, err := dead.GetMsg(ctx, dead.CachedInfo().State.LastSeq)
	if err != nil {
		t.Fatal(err)
	}
	if string(m.Data) != "poison" || m.Header.Get("Tock-Target") != "jobs.resize" || m.Header.Get("Tock-Consumer") != "workers" {
		t.Errorf("dead letter %s %q %v", m.Subject, m.Data, m.Header)
	}
	for deadline := time.Now().Add(extWait); ; {
		info, err := stream.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if info.State.Msgs == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("JOBS still holds %d messages", info.State.Msgs)
		}
		time.Sleep(20 * time.Millisecond)
	}
	s.stop(t)
	if strings.Contains(s.stderr.String(), "NATS error") || strings.Contains(s.stderr.String(), "level=WARN") {
		t.Errorf("tock with the documented permissions:\n%s", s.stderr.String())
	}
}

// checkTockPermissions exercises what the round trip does not, as the
// producer app: a delivery to a JetStream stream (stream lookup, PubAck),
// service discovery, and the purge of message id once retention passed.
func checkTockPermissions(t *testing.T, ns *server.Server, appPass, id string) {
	t.Helper()
	url := ns.ClientURL()
	nc := natstest.Connect(t, ns, nats.UserInfo("app", appPass))
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), extWait)
	defer cancel()
	st, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "EXT_JS", Subjects: []string{"ext.js"}})
	if err != nil {
		t.Fatal(err)
	}
	decodeReply(t, cli(t, "", "schedule", "--nats-url", url, "--to", "ext.js", "--in", "50ms", "to a stream"), "id", "target", "deliver_at")
	if _, err := nc.Request("$SRV.PING.tock", nil, time.Second); err != nil {
		t.Errorf("$SRV.PING.tock: %v", err)
	}
	for {
		info, err := st.Info(ctx)
		if err != nil {
			t.Fatalf("target stream: %v", err)
		}
		res := cli(t, "", "get", "--nats-url", url, id)
		if info.State.Msgs == 1 && res.code == 1 && strings.HasPrefix(res.stderr, "error 404: ") {
			return // delivered to the stream; the first message purged
		}
		select {
		case <-ctx.Done():
			t.Fatalf("after %s: %d messages in the target stream (want 1); get %s: %v", extWait, info.State.Msgs, id, res)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// TestExternalNkey: --nats-nkey with a seed file; a seed the server does
// not know is refused; a file that is no seed is named, not shown.
func TestExternalNkey(t *testing.T) {
	tockKP, tockSeed := newNkeyUser(t)
	appKP, appSeed := newNkeyUser(t)
	_, strangerSeed := newNkeyUser(t)
	ns := natstest.StartOptions(t, &server.Options{JetStream: true, Nkeys: []*server.NkeyUser{
		{Nkey: publicKey(t, tockKP)}, {Nkey: publicKey(t, appKP)},
	}})
	url := ns.ClientURL()
	secrets := []string{string(tockSeed), string(appSeed), string(strangerSeed)}

	s, _ := serveExt(t, false, "--nats-url", url, "--nats-nkey", writeFile(t, "tock.nk", tockSeed))
	roundTrip(t, url, "nkey", "--nats-nkey", writeFile(t, "app.nk", appSeed))
	s.stop(t)
	noSecret(t, "serve", s.stdout.String()+s.stderr.String(), secrets...)

	stranger := writeFile(t, "stranger.nk", strangerSeed)
	s, code := serveExt(t, true, "--nats-url", url, "--nats-nkey", stranger)
	failsWith(t, "serve, unknown nkey", cliResult{code, s.stdout.String(), s.stderr.String()}, 1,
		"connect to "+url+": nats: Authorization Violation", secrets...)
	failsWith(t, "get, unknown nkey", cli(t, "", "get", "--nats-url", url, "--nats-nkey", stranger, unknownID), 1,
		"Authorization Violation", secrets...)
	failsWith(t, "get, no nkey", cli(t, "", "get", "--nats-url", url, unknownID), 1,
		"Authorization Violation", secrets...)
	// A creds file is no nkey seed for a user... but a seed of another
	// kind is refused before connecting, without its contents.
	accKP, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	accSeed, _ := accKP.Seed()
	accFile := writeFile(t, "account.nk", accSeed)
	failsWith(t, "get, an account seed", cli(t, "", "get", "--nats-url", url, "--nats-nkey", accFile, unknownID), 2,
		"--nats-nkey "+accFile+": ", string(accSeed))
}

// TestExternalCreds: --nats-creds in operator mode (JWTs made here, a
// memory resolver); a user of an account the operator did not sign is
// refused.
func TestExternalCreds(t *testing.T) {
	op := newOperator(t)
	acc := op.account(t, "APP", true)
	tockCreds, appCreds := acc.user(t, "tock"), acc.user(t, "app")
	ns := natstest.StartOptions(t, &server.Options{
		JetStream: true, TrustedOperators: []*jwt.OperatorClaims{op.claims}, AccountResolver: op.resolver,
		SystemAccount: op.account(t, "SYS", false).pub,
	})
	url := ns.ClientURL()

	s, _ := serveExt(t, false, "--nats-url", url, "--nats-creds", writeFile(t, "tock.creds", tockCreds))
	roundTrip(t, url, "creds", "--nats-creds", writeFile(t, "app.creds", appCreds))
	s.stop(t)
	secrets := append(seedsOf(tockCreds, appCreds), jwtsOf(tockCreds, appCreds)...)
	noSecret(t, "serve", s.stdout.String()+s.stderr.String(), secrets...)

	// A user of another operator's account: the server does not trust it.
	other := newOperator(t).account(t, "OTHER", true).user(t, "mallory")
	otherFile := writeFile(t, "other.creds", other)
	s, code := serveExt(t, true, "--nats-url", url, "--nats-creds", otherFile)
	secrets = append(secrets, seedsOf(other)...)
	failsWith(t, "serve, untrusted creds", cliResult{code, s.stdout.String(), s.stderr.String()}, 1,
		"connect to "+url+": nats: Authorization Violation", secrets...)
	failsWith(t, "get, untrusted creds", cli(t, "", "get", "--nats-url", url, "--nats-creds", otherFile, unknownID), 1,
		"Authorization Violation", secrets...)
	failsWith(t, "get, no creds", cli(t, "", "get", "--nats-url", url, unknownID), 1, "Authorization", secrets...)
	// The JWT alone, without its seed: refused before connecting.
	jwtOnly := writeFile(t, "jwt-only.creds", []byte(strings.Split(string(appCreds), "------END NATS USER JWT------")[0]+"------END NATS USER JWT------\n"))
	failsWith(t, "get, creds without a seed", cli(t, "", "get", "--nats-url", url, "--nats-creds", jwtOnly, unknownID), 2,
		"--nats-creds "+jwtOnly+": no user nkey seed in it", secrets...)
}

// TestExternalTLS: a server that requires client certificates signed by
// a CA made here; tock connects with --tls-ca, --tls-cert and --tls-key.
// Without a client certificate, or without the CA, it cannot.
func TestExternalTLS(t *testing.T) {
	ca := newTestCA(t)
	srvCert, srvKey := ca.issue(t, "nats-server", true)
	srvPair, err := tls.X509KeyPair(srvCert, srvKey)
	if err != nil {
		t.Fatal(err)
	}
	ns := natstest.StartOptions(t, &server.Options{
		JetStream: true, TLS: true, TLSVerify: true,
		TLSConfig: &tls.Config{
			Certificates: []tls.Certificate{srvPair}, ClientCAs: ca.pool,
			ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS12,
		},
	})
	url := ns.ClientURL()
	caFile := writeFile(t, "ca.pem", ca.certPEM)
	tockCert, tockKey := ca.issue(t, "tock", false)
	appCert, appKey := ca.issue(t, "app", false)
	tockArgs := []string{"--tls-ca", caFile, "--tls-cert", writeFile(t, "tock.pem", tockCert), "--tls-key", writeFile(t, "tock-key.pem", tockKey)}
	appArgs := []string{"--tls-ca", caFile, "--tls-cert", writeFile(t, "app.pem", appCert), "--tls-key", writeFile(t, "app-key.pem", appKey)}
	secrets := []string{pemBody(tockKey), pemBody(appKey)}

	s, _ := serveExt(t, false, append([]string{"--nats-url", url}, tockArgs...)...)
	roundTrip(t, url, "tls", appArgs...)
	s.stop(t)
	noSecret(t, "serve", s.stdout.String()+s.stderr.String(), secrets...)

	s, code := serveExt(t, true, "--nats-url", url, "--tls-ca", caFile)
	failsWith(t, "serve without a client certificate", cliResult{code, s.stdout.String(), s.stderr.String()}, 1,
		"connect to "+url+": ", secrets...)
	failsWith(t, "get without a client certificate", cli(t, "", "get", "--nats-url", url, "--tls-ca", caFile, unknownID), 1,
		"connect to "+url+": ", secrets...)
	failsWith(t, "get without the CA", cli(t, "", append([]string{"get", "--nats-url", url, unknownID}, appArgs[2:]...)...), 1,
		"certificate signed by unknown authority", secrets...)
	// A client certificate of another CA: the server refuses it.
	strangerCert, strangerKey := newTestCA(t).issue(t, "stranger", false)
	failsWith(t, "get with a stranger's certificate", cli(t, "", "get", "--nats-url", url, "--tls-ca", caFile,
		"--tls-cert", writeFile(t, "s.pem", strangerCert), "--tls-key", writeFile(t, "s-key.pem", strangerKey), unknownID), 1,
		"connect to "+url+": ", pemBody(strangerKey))
}

// ---- credentials made at test time

func newNkeyUser(t *testing.T) (nkeys.KeyPair, []byte) {
	t.Helper()
	kp, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	seed, err := kp.Seed()
	if err != nil {
		t.Fatal(err)
	}
	return kp, seed
}

func publicKey(t *testing.T, kp nkeys.KeyPair) string {
	t.Helper()
	pub, err := kp.PublicKey()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// testOperator signs accounts into a memory resolver.
type testOperator struct {
	kp       nkeys.KeyPair
	claims   *jwt.OperatorClaims
	resolver *server.MemAccResolver
}

type testAccount struct {
	kp  nkeys.KeyPair
	pub string
}

func newOperator(t *testing.T) *testOperator {
	t.Helper()
	kp, err := nkeys.CreateOperator()
	if err != nil {
		t.Fatal(err)
	}
	oc := jwt.NewOperatorClaims(publicKey(t, kp))
	oc.Name = "tock-test"
	enc, err := oc.Encode(kp)
	if err != nil {
		t.Fatal(err)
	}
	if oc, err = jwt.DecodeOperatorClaims(enc); err != nil {
		t.Fatal(err)
	}
	return &testOperator{kp: kp, claims: oc, resolver: &server.MemAccResolver{}}
}

func (o *testOperator) account(t *testing.T, name string, jetStream bool) *testAccount {
	t.Helper()
	kp, err := nkeys.CreateAccount()
	if err != nil {
		t.Fatal(err)
	}
	a := &testAccount{kp: kp, pub: publicKey(t, kp)}
	ac := jwt.NewAccountClaims(a.pub)
	ac.Name = name
	if jetStream {
		ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
	}
	enc, err := ac.Encode(o.kp)
	if err != nil {
		t.Fatal(err)
	}
	if err := o.resolver.Store(a.pub, enc); err != nil {
		t.Fatal(err)
	}
	return a
}

// user returns a creds file's contents for a new user of a.
func (a *testAccount) user(t *testing.T, name string) []byte {
	t.Helper()
	kp, seed := newNkeyUser(t)
	uc := jwt.NewUserClaims(publicKey(t, kp))
	uc.Name = name
	enc, err := uc.Encode(a.kp)
	if err != nil {
		t.Fatal(err)
	}
	creds, err := jwt.FormatUserConfig(enc, seed)
	if err != nil {
		t.Fatal(err)
	}
	return creds
}

// seedsOf and jwtsOf pick the secrets out of creds files.
func seedsOf(creds ...[]byte) []string {
	var s []string
	for _, c := range creds {
		if kp, err := nkeys.ParseDecoratedNKey(c); err == nil {
			seed, _ := kp.Seed()
			s = append(s, string(seed))
		}
	}
	return s
}

func jwtsOf(creds ...[]byte) []string {
	var s []string
	for _, c := range creds {
		if j, err := nkeys.ParseDecoratedJWT(c); err == nil {
			s = append(s, j)
		}
	}
	return s
}

// testCA is an ECDSA certificate authority made for one test.
type testCA struct {
	cert    *x509.Certificate
	key     *ecdsa.PrivateKey
	certPEM []byte
	pool    *x509.CertPool
}

func newTestCA(t *testing.T) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "tock test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatal(err)
	}
	ca := &testCA{cert: cert, key: key, certPEM: pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pool: x509.NewCertPool()}
	ca.pool.AddCert(cert)
	return ca
}

// issue makes a certificate for 127.0.0.1 (server) or a client, as PEM.
func (ca *testCA) issue(t *testing.T, cn string, isServer bool) (certPEM, keyPEM []byte) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{
		SerialNumber: serial, Subject: pkix.Name{CommonName: cn},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if isServer {
		tmpl.ExtKeyUsage = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
		tmpl.IPAddresses = []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder})
}

// pemBody is the first base64 line of a PEM block: a piece of the key
// that must never be printed.
func pemBody(p []byte) string {
	lines := strings.Split(string(p), "\n")
	if len(lines) < 2 {
		return string(p)
	}
	return lines[1]
}
