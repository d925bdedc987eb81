package service

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nkeys"

	"github.com/tockd/tock/deadletter"
	"github.com/tockd/tock/delivery"
	"github.com/tockd/tock/subject"
)

// The embedded server keeps tock's journal (and any internal state) in an
// account of its own that no client credential reaches: tock's users in it
// are nkeys generated at each start and never written anywhere. Clients
// live in the application account (the global account $G unless the
// configuration says otherwise), where tock answers requests and delivers
// on a connection of its own; every client there is denied tock's
// subjects, so none can read, answer or steal a request. (A service
// import from the private account would also hand tock every request,
// but costs the server a response mapping and a JSON header per request:
// ingest fell from 127k/s to 47k/s.) docs/SECURITY.md.
const (
	// TockAccount is the private account of the embedded server.
	TockAccount = "TOCK"
	// inboxPrefix is the inbox of tock's connection in the application
	// account. Clients there may neither subscribe nor publish below it,
	// and no target may be under it, so nobody reads or forges the
	// PubAcks of deliveries.
	inboxPrefix = subject.Inbox
)

// ErrInsecureListen: the embedded server would accept unauthenticated
// clients beyond this machine.
var ErrInsecureListen = errors.New("refusing to accept unauthenticated clients on a non-loopback address")

// Client permissions denied to every user of the application account:
// tock's requests (so no client answers or steals them), tock's inbox (so
// no client reads or forges its PubAcks) and tock's $SRV discovery
// answers. The rest of the account is the deployment's own.
var (
	denySubscribe = []string{"tock.>", inboxPrefix + ".>", "$SRV.*.tock", "$SRV.*.tock.>"}
	// Dead letters come from tock alone: a forged one could be redriven
	// to a target its writer may not schedule to. So do max-deliveries
	// advisories, which the server publishes itself: a forged one would
	// make tock move a message that was never given up on.
	denyPublish = []string{inboxPrefix + ".>", delivery.DeadSubjects, deadletter.AdvisoryPrefix + ">"}
)

// identity is an nkey user of the embedded server.
type identity struct {
	pub string
	kp  nkeys.KeyPair
}

func newIdentity() (identity, error) {
	kp, err := nkeys.CreateUser()
	if err != nil {
		return identity{}, fmt.Errorf("create nkey: %w", err)
	}
	pub, err := kp.PublicKey()
	if err != nil {
		return identity{}, fmt.Errorf("nkey public key: %w", err)
	}
	return identity{pub: pub, kp: kp}, nil
}

// option authenticates a connection as this identity.
func (id identity) option() nats.Option { return nats.Nkey(id.pub, id.kp.Sign) }

// embedded is the embedded server's configuration and tock's identities in it.
type embedded struct {
	opts       *server.Options
	appAccount string   // where clients live and tock delivers
	private    identity // tock's user in TockAccount: journal, gateway
	app        identity // tock's user in the application account: deliveries
	listen     string   // host:port, for messages
}

// embeddedOptions builds the embedded server's options: the deployment's
// configuration file, if any, then tock's private account and users on top.
func embeddedOptions(cfg Config) (*embedded, error) {
	opts := &server.Options{}
	if cfg.NATSConfig != "" {
		var err error
		if opts, err = server.ProcessConfigFile(cfg.NATSConfig); err != nil {
			return nil, fmt.Errorf("--nats-config %s: %w", cfg.NATSConfig, err)
		}
	}
	if len(opts.TrustedOperators) > 0 || len(opts.TrustedKeys) > 0 || opts.AccountResolver != nil {
		return nil, fmt.Errorf("--nats-config %s: operator (JWT) mode is not supported by the embedded server; run nats-server yourself and point tock at it with --nats-url and --nats-creds", cfg.NATSConfig)
	}
	for _, a := range opts.Accounts {
		if a.Name == TockAccount {
			return nil, fmt.Errorf("--nats-config %s: account %s is reserved for tock's journal", cfg.NATSConfig, TockAccount)
		}
	}
	if opts.Authorization != "" {
		return nil, fmt.Errorf("--nats-config %s: token authorization cannot be combined with tock's private account; define users (user/password or nkey) instead", cfg.NATSConfig)
	}
	if opts.AuthCallout != nil {
		return nil, fmt.Errorf("--nats-config %s: auth callout is not supported by the embedded server", cfg.NATSConfig)
	}
	// A single authorization user becomes a user of the global account:
	// with tock's users present the server only consults the user lists.
	if opts.Username != "" {
		opts.Users = append(opts.Users, &server.User{Username: opts.Username, Password: opts.Password})
		opts.Username, opts.Password = "", ""
	}

	e := &embedded{appAccount: server.DEFAULT_GLOBAL_ACCOUNT}
	if err := e.placeListen(cfg, opts); err != nil {
		return nil, err
	}
	authenticated := len(opts.Users) > 0 || len(opts.Nkeys) > 0
	if opts.NoAuthUser != "" {
		acc := accountOfUser(opts, opts.NoAuthUser)
		if acc != "" {
			e.appAccount = acc
		}
		authenticated = false
	}
	if cfg.AppAccount != "" {
		e.appAccount = cfg.AppAccount
	}
	if e.appAccount != server.DEFAULT_GLOBAL_ACCOUNT && !slices.ContainsFunc(opts.Accounts, func(a *server.Account) bool { return a.Name == e.appAccount }) {
		return nil, fmt.Errorf("application account %q is not defined in --nats-config", e.appAccount)
	}
	if !authenticated && !cfg.Insecure && !isLoopback(opts.Host) {
		return nil, fmt.Errorf("%w: %s lets anyone connect without credentials; define users in a --nats-config file (docs/SECURITY.md), listen on 127.0.0.1, or pass --insecure", ErrInsecureListen, e.listen)
	}

	// Every user of the application account keeps its permissions, minus
	// tock's subjects.
	for _, u := range opts.Users {
		if accountName(u.Account) == e.appAccount {
			u.Permissions = withTockDenied(u.Permissions)
		}
	}
	for _, u := range opts.Nkeys {
		if accountName(u.Account) == e.appAccount {
			u.Permissions = withTockDenied(u.Permissions)
		}
	}
	if len(opts.Users) == 0 && len(opts.Nkeys) == 0 {
		// Nobody is configured: clients connect without credentials, as to
		// a plain nats-server, and land in the global account as an nkey
		// user whose seed is thrown away (a user with a password would do
		// as well, but makes the server warn about plaintext passwords).
		anon, err := newIdentity()
		if err != nil {
			return nil, err
		}
		opts.Nkeys = append(opts.Nkeys, &server.NkeyUser{Nkey: anon.pub, Permissions: withTockDenied(nil)})
		opts.NoAuthUser = anon.pub
	}

	var err error
	if e.private, err = newIdentity(); err != nil {
		return nil, err
	}
	if e.app, err = newIdentity(); err != nil {
		return nil, err
	}
	// Parsed from text so the account gets JetStream limits the way a
	// configuration file gives them (the field is not exported).
	tock := &server.Options{}
	if err := tock.ProcessConfigString(fmt.Sprintf("accounts { %s: { jetstream: enabled, users: [{nkey: %s}] } }", TockAccount, e.private.pub)); err != nil {
		return nil, fmt.Errorf("tock's account: %w", err)
	}
	opts.Accounts = append(opts.Accounts, tock.Accounts...)
	opts.Nkeys = append(opts.Nkeys, tock.Nkeys...)
	appUser := &server.NkeyUser{Nkey: e.app.pub}
	for _, a := range opts.Accounts {
		if a.Name == e.appAccount {
			appUser.Account = a
		}
	}
	opts.Nkeys = append(opts.Nkeys, appUser)

	opts.JetStream = true
	opts.StoreDir = cfg.DataDir
	opts.NoSigs = true
	if opts.ServerName == "" {
		opts.ServerName = "tock"
	}
	if opts.MaxPayload == 0 {
		opts.MaxPayload = embeddedMaxPayload
	}
	if cfg.SyncAlways {
		opts.SyncAlways = true
	}
	e.opts = opts
	return e, nil
}

// placeListen decides the client address: --nats-listen when given (Listen
// set), else the configuration file's, else the default.
func (e *embedded) placeListen(cfg Config, opts *server.Options) error {
	listen := cfg.Listen
	if listen == "" && (opts.Host != "" || opts.Port != 0) {
		host, port := opts.Host, opts.Port
		if host == "" {
			host = server.DEFAULT_HOST
		}
		if port == 0 {
			port = server.DEFAULT_PORT
		}
		listen = net.JoinHostPort(host, strconv.Itoa(port))
	}
	if listen == "" {
		listen = DefaultListen
	}
	host, portText, err := net.SplitHostPort(listen)
	if err != nil {
		return fmt.Errorf("--nats-listen %q: %w", listen, err)
	}
	port, err := strconv.Atoi(portText)
	if err != nil {
		return fmt.Errorf("--nats-listen %q: port: %w", listen, err)
	}
	opts.Host, opts.Port, e.listen = host, port, listen
	return nil
}

// isLoopback reports whether host only accepts connections from this machine.
func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func accountName(a *server.Account) string {
	if a == nil {
		return server.DEFAULT_GLOBAL_ACCOUNT
	}
	return a.Name
}

func accountOfUser(opts *server.Options, name string) string {
	for _, u := range opts.Users {
		if u.Username == name {
			return accountName(u.Account)
		}
	}
	for _, u := range opts.Nkeys {
		if u.Nkey == name {
			return accountName(u.Account)
		}
	}
	return ""
}

// withTockDenied adds tock's subjects to the deny lists of p (nil: all allowed).
func withTockDenied(p *server.Permissions) *server.Permissions {
	out := &server.Permissions{}
	if p != nil {
		*out = *p
	}
	out.Subscribe = withDenied(out.Subscribe, denySubscribe)
	out.Publish = withDenied(out.Publish, denyPublish)
	return out
}

func withDenied(p *server.SubjectPermission, deny []string) *server.SubjectPermission {
	out := &server.SubjectPermission{}
	if p != nil {
		out.Allow = slices.Clone(p.Allow)
		out.Deny = slices.Clone(p.Deny)
	}
	for _, d := range deny {
		if !slices.Contains(out.Deny, d) {
			out.Deny = append(out.Deny, d)
		}
	}
	return out
}

// enableAppJetStream gives the running server's application account
// JetStream if it has none: the global account keeps the streams it had
// before tock had an account of its own.
func (e *embedded) enableAppJetStream(ns *server.Server) error {
	app, err := ns.LookupAccount(e.appAccount)
	if err != nil {
		return fmt.Errorf("application account %s: %w", e.appAccount, err)
	}
	if app.JetStreamEnabled() {
		return nil
	}
	unlimited := server.JetStreamAccountLimits{MaxMemory: -1, MaxStore: -1, MaxStreams: -1, MaxConsumers: -1, MaxAckPending: -1, MemoryMaxStreamBytes: -1, StoreMaxStreamBytes: -1}
	if err := app.EnableJetStream(map[string]server.JetStreamAccountLimits{"": unlimited}, nil); err != nil {
		return fmt.Errorf("enable JetStream in account %s: %w", e.appAccount, err)
	}
	return nil
}

// migrateJournalAccount moves a journal stream that an earlier tock kept
// in the global account into tock's account, before the server starts.
// A rename within the store is atomic: a crash leaves it in one place.
// Once tock's account has its journal, a stream of that name in the
// global account is a client's own and stays where it is.
func migrateJournalAccount(storeDir, stream string) (moved bool, err error) {
	js := filepath.Join(storeDir, "jetstream")
	from := filepath.Join(js, server.DEFAULT_GLOBAL_ACCOUNT, "streams", stream)
	to := filepath.Join(js, TockAccount, "streams", stream)
	if _, err := os.Stat(to); err == nil {
		return false, nil
	} else if !errors.Is(err, os.ErrNotExist) {
		return false, fmt.Errorf("journal migration: %w", err)
	}
	if _, err := os.Stat(from); errors.Is(err, os.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, fmt.Errorf("journal migration: %w", err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o750); err != nil {
		return false, fmt.Errorf("journal migration: %w", err)
	}
	if err := os.Rename(from, to); err != nil {
		return false, fmt.Errorf("journal migration: %w", err)
	}
	return true, nil
}
