package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/tockd/tock/actors"
	"github.com/tockd/tock/bench"
	"github.com/tockd/tock/deadletter"
	"github.com/tockd/tock/delivery"
	"github.com/tockd/tock/internal/natsurl"
	"github.com/tockd/tock/service"
	"github.com/tockd/tock/subject"
)

const defaultShutdownTimeout = 10 * time.Second

// defaultGCPercent is Go's GC target (GOGC) unless --gc-percent or GOGC
// says otherwise. It is provisional: the value will be chosen by
// measurement, comparing runs of `tock bench --serve-arg=--gc-percent=N`
// for a few N on the capacity (RSS next to heap), precision (firing
// stalls) and ingest scenarios. 400 lets the heap grow to five times its
// live size between cycles instead of Go's default two. tock's resident
// messages hold no pointers, so a cycle is cheap to defer, and each cycle
// it skips is a stall less while messages fire: at 10,000 fires/s, p99.9
// lateness went from 30 ms to 17 ms and the worst from 65 ms to 30 ms
// (BENCHMARKS.md). The price is memory; the soft memory limit
// (--memory-limit, else the cgroup's or a default, see chooseMemoryLimit)
// bounds it, GOGC or --gc-percent 100 gives it back.
const defaultGCPercent = 400

type serveOpts struct {
	cfg             service.Config
	logLevel        slog.Level
	logFormat       string
	pprofAddr       string
	shutdownTimeout time.Duration
	sync            string
	gcPercent       int
	memoryLimit     int
	conn            connOpts        // credentials for --nats-url
	benchPlain      bench.PlainSpec // hidden bench aid, see benchAidFlags
	set             map[string]bool // flags given on the command line
}

func serveFlags(o *serveOpts) *flag.FlagSet {
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	c := &o.cfg
	fs.StringVar(&c.DataDir, "data", service.DefaultDataDir, "`dir`ectory of the embedded server's JetStream store")
	fs.StringVar(&c.Listen, "nats-listen", service.DefaultListen, "client address of the embedded NATS server, `host:port` (port -1: any free one)")
	fs.StringVar(&c.NATSConfig, "nats-config", "", "configure the embedded NATS server from this nats-server configuration `file` (users, permissions, TLS, limits); tock adds its private account (docs/SECURITY.md)")
	fs.StringVar(&c.AppAccount, "app-account", "", "with --nats-config: the `account` whose clients use tock and receive deliveries (default: no_auth_user's account, else the global account)")
	fs.BoolVar(&c.Insecure, "insecure", false, "let the embedded NATS server accept clients without credentials on a non-loopback address")
	fs.StringVar(&c.NATSURL, "nats-url", "", "use the JetStream-enabled NATS server at `URL` instead of embedding one")
	addConnFlags(fs, &o.conn)
	fs.Var(newDurationValue(&c.MaxDelay, service.DefaultMaxDelay), "max-delay", "refuse messages due further ahead than this `duration`")
	fs.Func("allow-targets", "schedule only to targets matching these comma-separated subject `patterns` (orders.>,audit.*; default >: any); others get 403", func(v string) error {
		a, err := subject.ParseAllow(v)
		c.AllowTargets = a
		return err
	})
	fs.Var(newBytesValue(&c.MaxPayload, service.DefaultMaxPayload), "max-payload", "refuse messages whose body plus headers exceed this `size`")
	fs.IntVar(&c.DeliveryMaxAttempts, "delivery-max-attempts", 0, "dead-letter a delivery after this `number` of failed attempts (0: no bound; a message's Tock-Max-Attempts wins)")
	fs.Var(newDurationValue(&c.DeliveryMaxAge, service.DefaultDeliveryMaxAge), "delivery-max-age", "dead-letter a delivery still failing after this `duration` (0: no bound; a message's Tock-Max-Age wins)")
	fs.Var(newDurationValue(&c.DeadRetention, service.DefaultDeadRetention), "dlq-retention", "keep dead letters in "+delivery.DeadStream+" for this `duration`")
	fs.Func("dead-letter", "move the messages JetStream consumer `STREAM:CONSUMER` gave up on (max_deliver reached) into "+delivery.DeadStream+"; repeatable", func(v string) error {
		src, err := deadletter.ParseSource(v)
		if err == nil && !slices.Contains(c.DeadLetters, src) {
			c.DeadLetters = append(c.DeadLetters, src)
		}
		return err
	})
	fs.IntVar(&c.MaxInFlight, "max-inflight", service.DefaultMaxInFlight, "answer 503 beyond this `number` of requests held unanswered (0: no bound)")
	fs.Var(newBytesValue(&c.MaxInFlightBytes, service.DefaultMaxInFlightBytes), "max-inflight-bytes", "answer 503 beyond this `size` of request bodies held unanswered (0: no bound)")
	fs.Var(newDurationValue(&c.Retention, service.DefaultRetention), "retention", "keep delivered and cancelled messages queryable for this `duration`")
	fs.Var(newDurationValue(&c.SlotWidth, service.DefaultSlotWidth), "slot-width", "one slot actor owns this `duration` of deliver times")
	fs.Var(newDurationValue(&c.Horizon, service.DefaultHorizon), "horizon", "load a slot this `duration` before it starts")
	fs.IntVar(&c.MaxLookupSlots, "max-lookup-slots", actors.DefaultMaxLookupSlots, "load at most this `number` of slots at once only to answer gets and cancels; lookups of others wait, and beyond a queue get 503 (0: no bound)")
	fs.Var(newBytesValue(&c.SlotMemory, service.DefaultSlotMemory), "slot-memory", "keep at most this `size` of message bodies in memory per loaded slot; the rest are read back from the journal as they come due (0: no bound)")
	fs.StringVar(&o.sync, "sync", "interval", "when the embedded server fsyncs: `mode` interval (every 2 minutes; survives kill -9) or always (before each acknowledgement; survives power loss)")
	fs.IntVar(&o.gcPercent, "gc-percent", defaultGCPercent, "Go GC target `percent` (GOGC); the GOGC environment variable wins unless this flag is given")
	fs.Var(newBytesValue(&o.memoryLimit, 0), "memory-limit", "Go's soft memory limit (GOMEMLIMIT) in `size`; 0 for none (default: GOMEMLIMIT if set, else 90% of the cgroup's memory limit if there is one, else 90% of 1GiB)")
	fs.TextVar(&o.logLevel, "log-level", slog.LevelInfo, "log `level`: debug, info, warn or error")
	fs.StringVar(&o.logFormat, "log-format", "text", "log `format`: text or json")
	fs.StringVar(&o.pprofAddr, "pprof", "", "serve net/http/pprof on `host:port` under /debug/pprof/")
	fs.Var(newDurationValue(&o.shutdownTimeout, defaultShutdownTimeout), "shutdown-timeout", "give a graceful shutdown this `duration`")
	return fs
}

func parseServe(args []string) (*serveOpts, error) {
	o := new(serveOpts)
	fs := serveFlags(o)
	benchAidFlags(fs, o)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return nil, err
	}
	if len(pos) > 0 {
		return nil, usagef("unexpected argument %q", pos[0])
	}
	o.set = map[string]bool{}
	fs.Visit(func(f *flag.Flag) { o.set[f.Name] = true })
	c := &o.cfg
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"max-delay", c.MaxDelay}, {"retention", c.Retention}, {"slot-width", c.SlotWidth},
		{"horizon", c.Horizon}, {"shutdown-timeout", o.shutdownTimeout},
	} {
		if d.v <= 0 {
			return nil, usagef("--%s must be positive", d.name)
		}
	}
	if c.MaxPayload <= 0 {
		return nil, usagef("--max-payload must be positive")
	}
	if c.DeliveryMaxAttempts < 0 || c.DeliveryMaxAge < 0 {
		return nil, usagef("--delivery-max-attempts and --delivery-max-age must not be negative")
	}
	if c.DeadRetention <= 0 {
		return nil, usagef("--dlq-retention must be positive")
	}
	if c.DeliveryMaxAttempts == 0 {
		c.DeliveryMaxAttempts = -1 // no bound (the service's zero means its default)
	}
	if c.DeliveryMaxAge == 0 {
		c.DeliveryMaxAge = -1
	}
	if c.MaxInFlight < 0 || c.MaxInFlightBytes < 0 {
		return nil, usagef("--max-inflight and --max-inflight-bytes must not be negative")
	}
	// 0 means no bound, which the service spells as negative.
	if c.MaxInFlight == 0 {
		c.MaxInFlight = -1
	}
	if c.MaxInFlightBytes == 0 {
		c.MaxInFlightBytes = -1
	}
	if c.MaxLookupSlots < 0 {
		return nil, usagef("--max-lookup-slots must not be negative")
	}
	if c.MaxLookupSlots == 0 {
		c.MaxLookupSlots = -1 // no bound (the service's zero means its default)
	}
	if c.SlotMemory < 0 {
		return nil, usagef("--slot-memory must not be negative")
	}
	if c.SlotMemory == 0 {
		c.SlotMemory = -1 // no bound (the service's zero means its default)
	}
	if o.gcPercent == 0 || o.gcPercent < -1 {
		return nil, usagef("--gc-percent must be positive, or -1 to turn the GC off")
	}
	if c.NATSConfig != "" && !o.set["nats-listen"] {
		c.Listen = "" // the file's listen address, or the default
	}
	if c.NATSURL == "" && c.Listen != "" {
		if _, _, err := net.SplitHostPort(c.Listen); err != nil {
			return nil, usagef("--nats-listen %q: want host:port", c.Listen)
		}
	}
	if c.NATSURL == "" {
		if c.DataDir == "" {
			return nil, usagef("--data must not be empty")
		}
		if g := o.conn.flagsGiven(); len(g) > 0 {
			return nil, usagef("%s: only with --nats-url (they say how to reach an external server)", strings.Join(g, ", "))
		}
	} else {
		o.conn.readEnv(os.Getenv)
		if c.ConnectOptions, err = o.conn.options(c.NATSURL); err != nil {
			return nil, err
		}
	}
	switch o.sync {
	case "interval":
	case "always":
		c.SyncAlways = true
	default:
		return nil, usagef("--sync %q: want interval or always", o.sync)
	}
	switch o.logFormat {
	case "text", "json":
	default:
		return nil, usagef("--log-format %q: want text or json", o.logFormat)
	}
	return o, nil
}

func newLogger(w io.Writer, format string, level slog.Level) *slog.Logger {
	ho := &slog.HandlerOptions{Level: level}
	if format == "json" {
		return slog.New(slog.NewJSONHandler(w, ho))
	}
	return slog.New(slog.NewTextHandler(w, ho))
}

func runServe(ctx context.Context, args []string, _ io.Reader, stdout, stderr io.Writer) int {
	c := lookup("serve")
	o, err := parseServe(args)
	if err != nil {
		return failUsage(c, err, stdout, stderr)
	}
	log := newLogger(stderr, o.logFormat, o.logLevel)
	slog.SetDefault(log)
	o.cfg.Logger = log
	if o.cfg.NATSURL != "" && (o.set["data"] || o.set["nats-listen"] || o.set["sync"] || o.set["nats-config"] || o.set["insecure"] || o.set["app-account"]) {
		log.Warn("--data, --nats-listen, --nats-config, --app-account, --insecure and --sync are ignored with --nats-url")
	}
	warnConnEnv(log, o.cfg.NATSURL, os.Getenv)

	if o.pprofAddr != "" {
		stop, err := servePprof(o.pprofAddr, log)
		if err != nil {
			log.Error("pprof", "err", err)
			return 1
		}
		defer stop()
	}

	gcPercent := "GOGC=" + os.Getenv("GOGC")
	if o.set["gc-percent"] || os.Getenv("GOGC") == "" {
		debug.SetGCPercent(o.gcPercent)
		gcPercent = strconv.Itoa(o.gcPercent)
	}
	mem, err := chooseMemoryLimit(o.set["memory-limit"], int64(o.memoryLimit), os.Getenv("GOMEMLIMIT"), debug.SetMemoryLimit(-1),
		func() (int64, string, error) { return cgroupMemoryLimit(os.DirFS("/")) })
	if err != nil {
		log.Warn("cannot read the cgroup's memory limit; using the default", "err", err)
	}
	if mem.apply {
		debug.SetMemoryLimit(mem.limit)
	}
	// Logged as the runtime has it now, whichever way it was set.
	mem.limit = debug.SetMemoryLimit(-1)

	cfg := o.cfg
	attrs := []any{
		"max_delay", formatDuration(cfg.MaxDelay), "max_payload", cfg.MaxPayload, "max_inflight", cfg.MaxInFlight, "max_inflight_bytes", cfg.MaxInFlightBytes, "allow_targets", cfg.AllowTargets.String(),
		"retention", formatDuration(cfg.Retention), "slot_width", formatDuration(cfg.SlotWidth),
		"horizon", formatDuration(cfg.Horizon), "gc_percent", gcPercent,
		"memory_limit", mem.String(), "memory_limit_from", mem.from,
	}
	if cfg.NATSURL != "" {
		attrs = append(attrs, "nats_url", natsurl.Redact(cfg.NATSURL))
	} else {
		attrs = append(attrs, "data", cfg.DataDir, "nats_listen", cfg.Listen, "nats_config", cfg.NATSConfig, "sync", o.sync)
	}
	log.Info("tock starting", attrs...)
	svc, err := service.Start(ctx, cfg)
	if err != nil {
		log.Error("tock failed to start", "err", err)
		return 1
	}
	log.Info("tock ready", "url", natsurl.Redact(svc.ClientURL()))
	if mem.limit != noMemoryLimit {
		go watchLiveHeap(ctx, mem.limit, heapWatchEvery, log)
	}
	aidDone := make(chan struct{})
	if o.benchPlain.N > 0 {
		go func() {
			defer close(aidDone)
			runBenchPlain(ctx, svc, o.benchPlain, cfg.ConnectOptions, stdout, log)
		}()
	} else {
		close(aidDone)
	}

	<-ctx.Done()
	<-aidDone
	log.Info("tock shutting down", "timeout", formatDuration(o.shutdownTimeout))
	sctx, cancel := context.WithTimeout(context.Background(), o.shutdownTimeout)
	defer cancel()
	if err := svc.Shutdown(sctx); err != nil {
		log.Error("tock shutdown failed", "err", err)
		return 1
	}
	log.Info("tock stopped")
	return 0
}

// servePprof serves the net/http/pprof handlers on addr until stop is called.
func servePprof(addr string, log *slog.Logger) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", addr, err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", redactedCmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("pprof server", "err", err)
		}
	}()
	log.Info("pprof listening", "url", "http://"+ln.Addr().String()+"/debug/pprof/")
	return func() { srv.Close() }, nil
}
