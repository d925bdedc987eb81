package service

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/tockd/tock/actors"
	"github.com/tockd/tock/clock"
	"github.com/tockd/tock/deadletter"
	"github.com/tockd/tock/delivery"
	"github.com/tockd/tock/gateway"
	"github.com/tockd/tock/internal/natsurl"
	"github.com/tockd/tock/journal/natsjournal"
)

// embeddedMaxPayload is the embedded server's message limit. It sits well
// above tock's own --max-payload so an oversized schedule still reaches the
// gateway and gets a 413 reply instead of a connection error, and so a
// journal record can batch many events.
const embeddedMaxPayload = 8 << 20

// journalFineWindow is how far ahead the journal keeps one subject per
// slot; beyond it, a day of deliver times shares one subject. A day covers
// the classic timers (minutes to hours) with one write each, and keeps a
// year ahead to about 365 + 2,880 subjects (docs/ARCHITECTURE.md).
const journalFineWindow = 24 * time.Hour

// Version is reported by the NATS service API.
const Version = "0.1.0"

// Service is a running tock.
type Service struct {
	cfg       Config
	log       *slog.Logger
	lock      *os.File       // flock on the data directory, embedded server only
	ns        *server.Server // nil with an external server
	nc        *nats.Conn
	readNC    *nats.Conn // the journal's reads
	appNC     *nats.Conn // the gateway and deliveries: the application account (nc with an external server)
	journal   *natsjournal.Journal
	publisher *delivery.Publisher
	scheduler *actors.Scheduler
	gateway   *gateway.Gateway
	dead      *deadletter.Watcher // nil without Config.DeadLetters
}

// Start brings tock up. On error, whatever was started is stopped again.
func Start(ctx context.Context, cfg Config) (_ *Service, err error) {
	cfg = cfg.withDefaults()
	s := &Service{cfg: cfg, log: cfg.Logger}
	defer func() {
		if err != nil {
			s.Shutdown(context.Background())
		}
	}()
	url := cfg.NATSURL
	var private, app []nats.Option // how tock authenticates to the embedded server
	if url == "" {
		if s.lock, err = lockDataDir(cfg.DataDir); err != nil {
			return nil, err
		}
		var e *embedded
		if e, err = embeddedOptions(cfg); err != nil {
			return nil, err
		}
		var moved bool
		if moved, err = migrateJournalAccount(cfg.DataDir, natsjournal.DefaultStream); err != nil {
			return nil, err
		}
		if moved {
			s.log.Info("moved the journal into tock's private account", "account", TockAccount)
		}
		if s.ns, err = startServer(e, cfg.Logger); err != nil {
			return nil, err
		}
		if err := e.enableAppJetStream(s.ns); err != nil {
			return nil, err
		}
		url = s.ns.ClientURL()
		private = []nats.Option{e.private.option()}
		app = []nats.Option{e.app.option(), nats.CustomInboxPrefix(inboxPrefix)}
	}
	conn := func(name string, auth []nats.Option, extra ...nats.Option) (*nats.Conn, error) {
		opts := append([]nats.Option{nats.Name(name), nats.MaxReconnects(-1), nats.ReconnectWait(100 * time.Millisecond)}, auth...)
		nc, err := nats.Connect(url, connectOptions(cfg, append(opts, extra...)...)...)
		if err != nil {
			return nil, fmt.Errorf("connect to %s: %w", natsurl.Redact(url), err)
		}
		return nc, nil
	}
	// No reconnect buffer: a journal append reported failed must not be
	// written later from a buffer, after the slot reloaded without it.
	if s.nc, err = conn("tock", private, nats.ReconnectBufSize(-1)); err != nil {
		return nil, err
	}
	// Slot loads read on a connection of their own: the server answers a
	// batched read in the asking connection's turn, and deliveries must not
	// queue behind a big slot's records.
	if s.readNC, err = conn("tock-journal-reads", private); err != nil {
		return nil, err
	}
	// Requests are answered and deliveries go out in the application
	// account, where clients and targets are; with an external server
	// everything shares tock's one account.
	s.appNC = s.nc
	if s.ns != nil {
		if s.appNC, err = conn("tock-app", app); err != nil {
			return nil, err
		}
	}
	if max := int(s.nc.MaxPayload()); cfg.MaxPayload >= max {
		s.log.Warn("--max-payload is not below the server's max_payload: larger messages get a NATS error instead of 413",
			"max_payload", cfg.MaxPayload, "server_max_payload", max)
	}
	s.journal, err = natsjournal.New(ctx, s.nc, natsjournal.Config{
		SlotWidth: cfg.SlotWidth,
		// Every slot the scheduler loads ahead of time must be open.
		FineWindow: max(journalFineWindow, 2*cfg.Horizon+cfg.SlotWidth),
		Logger:     s.log.With("part", "journal"),
		ReadConn:   s.readNC,
	})
	if err != nil {
		return nil, fmt.Errorf("open journal: %w", err)
	}
	clk := clock.Real{}
	if err := ensureDeadStream(ctx, s.appNC, cfg.DeadRetention); err != nil {
		return nil, err
	}
	if s.dead, err = deadletter.Start(ctx, s.appNC, cfg.DeadLetters, cfg.DeadRetention, s.log.With("part", "deadletter")); err != nil {
		return nil, err
	}
	s.publisher, err = delivery.New(s.appNC, clk, delivery.Config{
		Policy: delivery.Policy{MaxAttempts: max(cfg.DeliveryMaxAttempts, 0), MaxAge: max(cfg.DeliveryMaxAge, 0)},
	}, s.log.With("part", "delivery"))
	if err != nil {
		return nil, fmt.Errorf("start publisher: %w", err)
	}
	s.scheduler, err = actors.Start(ctx, actors.Config{
		SlotWidth: cfg.SlotWidth, Horizon: cfg.Horizon, Retention: cfg.Retention, MaxDelay: cfg.MaxDelay,
		MaxBodyBytes: max(cfg.SlotMemory, 0), MaxLookupSlots: cfg.MaxLookupSlots,
	}, actors.Deps{Journal: s.journal, Publisher: s.publisher, Clock: clk, Logger: s.log.With("part", "actors")})
	if err != nil {
		return nil, fmt.Errorf("start actors: %w", err)
	}
	s.gateway, err = gateway.Start(s.appNC, s.scheduler, clk, gateway.Config{
		MaxDelay: cfg.MaxDelay, MaxPayload: cfg.MaxPayload, AllowTargets: cfg.AllowTargets, Version: Version,
		MaxInFlight: max(cfg.MaxInFlight, 0), MaxInFlightBytes: max(cfg.MaxInFlightBytes, 0),
	}, s.log.With("part", "gateway"))
	if err != nil {
		return nil, fmt.Errorf("start gateway: %w", err)
	}
	if err := s.gateway.AddStatus(s.status); err != nil {
		return nil, fmt.Errorf("start gateway: %w", err)
	}
	return s, nil
}

// connectOptions puts cfg.ConnectOptions (external server only) before
// tock's own options, so that these, which tock relies on, win.
// Asynchronous errors (a permission the server denies, a slow consumer)
// go to the log instead of nats.go's default, a line on stderr.
func connectOptions(cfg Config, own ...nats.Option) []nats.Option {
	own = append(own, nats.ErrorHandler(func(nc *nats.Conn, sub *nats.Subscription, err error) {
		attrs := []any{"conn", nc.Opts.Name, "err", err}
		if sub != nil {
			attrs = append(attrs, "subject", sub.Subject)
		}
		cfg.Logger.Error("NATS error", attrs...)
	}))
	if cfg.NATSURL == "" {
		return own
	}
	return append(slices.Clone(cfg.ConnectOptions), own...)
}

func startServer(e *embedded, log *slog.Logger) (*server.Server, error) {
	ns, err := server.NewServer(e.opts)
	if err != nil {
		return nil, fmt.Errorf("configure embedded NATS server: %w", err)
	}
	fatal := make(chan string, 1)
	ns.SetLoggerV2(natsLogger{log: log.With("part", "nats"), fatal: fatal}, false, false, false)
	go ns.Start()
	// Poll readiness so a fatal start error (say, the port is taken) ends
	// the wait at once instead of after the deadline.
	deadline := time.Now().Add(30 * time.Second)
	for !ns.ReadyForConnections(50 * time.Millisecond) {
		select {
		case msg := <-fatal:
			ns.Shutdown()
			return nil, fmt.Errorf("embedded NATS server on %s: %s", e.listen, msg)
		default:
		}
		if time.Now().After(deadline) {
			ns.Shutdown()
			return nil, fmt.Errorf("embedded NATS server on %s did not become ready", e.listen)
		}
	}
	return ns, nil
}

// ClientURL is where NATS clients reach tock.
func (s *Service) ClientURL() string {
	if s.ns != nil {
		return s.ns.ClientURL()
	}
	return s.cfg.NATSURL
}

// InProcessConn opens a client connection to the embedded server that
// bypasses the network stack, so that a Service is a
// nats.InProcessConnProvider (nats.InProcessServer(svc)). It fails with
// an external server.
func (s *Service) InProcessConn() (net.Conn, error) {
	if s.ns == nil {
		return nil, errors.New("no embedded server: tock runs with --nats-url")
	}
	return s.ns.InProcessConn()
}

// statusTimeout bounds the gathering of one status reply.
const statusTimeout = 5 * time.Second

// status answers tock.status.
func (s *Service) status() (gateway.StatusResponse, error) {
	st := gateway.StatusResponse{Version: Version}
	var err error
	if st.Scheduler, err = s.scheduler.Stats(statusTimeout); err != nil {
		return st, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), statusTimeout)
	defer cancel()
	if st.Journal, err = s.journal.Info(ctx); err != nil {
		return st, err
	}
	st.Quarantine = s.journal.Quarantined()
	return st, nil
}

// Stats reports the scheduler's counters.
func (s *Service) Stats(timeout time.Duration) (actors.Stats, error) {
	return s.scheduler.Stats(timeout)
}

// Shutdown stops accepting requests, then stops the actors, the
// publisher, the journal (flushing appends already made) and the server.
func (s *Service) Shutdown(ctx context.Context) error {
	var errs []error
	s.dead.Stop()
	if s.gateway != nil {
		errs = append(errs, s.gateway.Stop())
	}
	if s.scheduler != nil {
		errs = append(errs, s.scheduler.Stop(10*time.Second))
	}
	if s.publisher != nil {
		s.publisher.Close()
	}
	if s.journal != nil {
		errs = append(errs, s.journal.Close())
	}
	if s.nc != nil {
		s.nc.Close()
	}
	if s.readNC != nil {
		s.readNC.Close()
	}
	if s.appNC != nil && s.appNC != s.nc {
		s.appNC.Close()
	}
	if s.ns != nil {
		s.ns.Shutdown()
		done := make(chan struct{})
		go func() { s.ns.WaitForShutdown(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			errs = append(errs, fmt.Errorf("embedded NATS shutdown: %w", ctx.Err()))
		}
	}
	if s.lock != nil {
		s.lock.Close() // releases the flock
	}
	return errors.Join(errs...)
}

// natsLogger routes the embedded server's log to slog, and its fatal
// errors to startServer as well.
type natsLogger struct {
	log   *slog.Logger
	fatal chan<- string
}

func (l natsLogger) Noticef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Warnf(format string, v ...any)   { l.log.Warn(fmt.Sprintf(format, v...)) }
func (l natsLogger) Fatalf(format string, v ...any) {
	msg := fmt.Sprintf(format, v...)
	l.log.Error(msg)
	select {
	case l.fatal <- msg:
	default:
	}
}
func (l natsLogger) Errorf(format string, v ...any) { l.log.Error(fmt.Sprintf(format, v...)) }
func (l natsLogger) Debugf(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }
func (l natsLogger) Tracef(format string, v ...any) { l.log.Debug(fmt.Sprintf(format, v...)) }

// ensureDeadStream creates or updates the dead-letter stream in the
// application account: users read and consume it there; tock alone
// writes it (denyPublish) and redrives from it.
func ensureDeadStream(ctx context.Context, nc *nats.Conn, retention time.Duration) error {
	js, err := jetstream.New(nc)
	if err != nil {
		return fmt.Errorf("dead-letter stream: %w", err)
	}
	_, err = js.CreateOrUpdateStream(ctx, jetstream.StreamConfig{
		Name:        delivery.DeadStream,
		Description: "tock's dead letters: messages their target refused for good, or whose retries ran out",
		Subjects:    []string{delivery.DeadSubjects},
		Storage:     jetstream.FileStorage,
		MaxAge:      retention,
		// A dead letter written again after a crash is the same message.
		Duplicates: min(2*time.Minute, retention),
	})
	if err != nil {
		return fmt.Errorf("create the dead-letter stream %s: %w", delivery.DeadStream, err)
	}
	return nil
}
