// Package gateway is tock's NATS door: a nats.go micro service named
// "tock" whose endpoints parse and validate requests, hand typed commands
// to a Scheduler and turn its results into JSON replies.
//
//	schedule  tock.schedule.<target>  body = payload, Tock-Deliver-At or Tock-Delay
//	cancel    tock.cancel.<id>
//	get       tock.get.<id>
//	redrive   tock.redrive.<id>       a dead letter again; Tock-Deliver-At or Tock-Delay optional
//
// Every request gets exactly one reply: a JSON document, or an error with
// the JSON body {"error":{"code":N,"description":"…"}} and micro's
// Nats-Service-Error and Nats-Service-Error-Code headers.
//
// The parsing and reply functions are pure so another door (HTTP) can
// reuse them and the error catalogue.
package gateway

import (
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nats.go/micro"

	"github.com/tockd/tock/actors"
	"github.com/tockd/tock/actors/slot"
	"github.com/tockd/tock/clock"
	"github.com/tockd/tock/msgid"
	"github.com/tockd/tock/subject"
)

// Scheduler is what the gateway drives (implemented by the actors package).
// reply is called exactly once, from any goroutine, possibly after the call returns.
type Scheduler interface {
	Schedule(req actors.ScheduleRequest, reply func(slot.Result))
	Cancel(id msgid.ID, reply func(slot.Result))
	Get(id msgid.ID, reply func(slot.Result))
}

// Config bounds what the gateway accepts.
type Config struct {
	// MaxDelay bounds how far ahead of now a message may be scheduled.
	MaxDelay time.Duration
	// MaxPayload bounds body plus headers (see HeaderSize) of a message, in bytes.
	MaxPayload int
	// MaxInFlight bounds the requests handed to the scheduler and not
	// yet answered, over all endpoints; MaxInFlightBytes bounds their
	// bodies. A request beyond either is answered 503 at once, before it
	// is parsed. 0: no bound.
	MaxInFlight      int
	MaxInFlightBytes int
	// AllowTargets limits the targets producers may schedule to (403
	// otherwise); the zero value allows every schedulable subject.
	AllowTargets subject.Allow
	// Version is the micro service version (SemVer); empty means "0.0.0".
	Version string
}

// ServiceName is the micro service name, as seen in $SRV discovery.
const ServiceName = "tock"

// Endpoint names, as seen in $SRV.INFO and $SRV.STATS.
const (
	EndpointSchedule = "schedule"
	EndpointCancel   = "cancel"
	EndpointGet      = "get"
)

// Gateway is a running NATS door.
type Gateway struct {
	nc  *nats.Conn
	js  jetstream.JetStream // reads the dead-letter stream for redrives
	s   Scheduler
	clk clock.Clock
	cfg Config
	log *slog.Logger
	svc micro.Service

	// mu is held shared around every Scheduler call and exclusively by
	// Stop, so once Stop has set stopped no Scheduler call is under way
	// and none will start.
	mu      sync.RWMutex
	stopped bool

	counters map[string]*counters // by endpoint name; the map is fixed at Start

	// The requests and body bytes in flight, over all endpoints, against
	// Config.MaxInFlight and MaxInFlightBytes; overloaded is the one 503
	// every refused request gets (built once: overload is when
	// allocating per request hurts most).
	inFlight, inFlightBytes atomic.Int64
	overloaded              *Error
	overloadedBytes         *Error
	overloads               atomic.Int64 // refused since the last warning
	lastOverloadWarn        atomic.Int64 // its clock time, Unix ns
}

// EndpointData is the "data" of each endpoint in $SRV.STATS. micro's own
// num_errors counts only errors answered while the handler runs; Errors
// counts every error reply by code, including the ones answered later.
type EndpointData struct {
	InFlight int64          `json:"in_flight"` // requests handed to the scheduler and not yet answered
	Errors   map[string]int `json:"errors,omitempty"`
}

type counters struct {
	inFlight atomic.Int64
	mu       sync.Mutex
	errors   map[string]int
}

func (c *counters) data() EndpointData {
	c.mu.Lock()
	defer c.mu.Unlock()
	return EndpointData{InFlight: c.inFlight.Load(), Errors: maps.Clone(c.errors)}
}

func (c *counters) countError(code string) {
	c.mu.Lock()
	if c.errors == nil {
		c.errors = make(map[string]int)
	}
	c.errors[code]++
	c.mu.Unlock()
}

// Start adds the "tock" micro service to nc and serves until Stop (or
// until nc closes). When it returns the endpoints are subscribed at the
// server. log may be nil.
func Start(nc *nats.Conn, s Scheduler, clk clock.Clock, cfg Config, log *slog.Logger) (*Gateway, error) {
	switch {
	case nc == nil:
		return nil, errors.New("gateway: nil connection")
	case s == nil:
		return nil, errors.New("gateway: nil scheduler")
	case clk == nil:
		return nil, errors.New("gateway: nil clock")
	case cfg.MaxDelay <= 0:
		return nil, fmt.Errorf("gateway: MaxDelay %s is not positive", cfg.MaxDelay)
	case cfg.MaxPayload <= 0:
		return nil, fmt.Errorf("gateway: MaxPayload %d is not positive", cfg.MaxPayload)
	case cfg.MaxInFlight < 0 || cfg.MaxInFlightBytes < 0:
		return nil, fmt.Errorf("gateway: MaxInFlight %d or MaxInFlightBytes %d is negative", cfg.MaxInFlight, cfg.MaxInFlightBytes)
	}
	if cfg.Version == "" {
		cfg.Version = "0.0.0"
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	g := &Gateway{
		nc: nc, s: s, clk: clk, cfg: cfg, log: log,
		overloaded:      Overloaded(fmt.Sprintf("%d requests in flight", cfg.MaxInFlight), "--max-inflight"),
		overloadedBytes: Overloaded(fmt.Sprintf("%d bytes of requests in flight", cfg.MaxInFlightBytes), "--max-inflight-bytes"),
		counters: map[string]*counters{
			EndpointSchedule: {},
			EndpointCancel:   {},
			EndpointGet:      {},
			EndpointRedrive:  {},
		},
	}
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	g.js = js
	svc, err := micro.AddService(nc, micro.Config{
		Name:        ServiceName,
		Version:     cfg.Version,
		Description: "tock schedules NATS messages for later delivery",
		Metadata: map[string]string{
			"max_delay":   cfg.MaxDelay.String(),
			"max_payload": strconv.Itoa(cfg.MaxPayload),
		},
		StatsHandler: func(e *micro.Endpoint) any {
			if c, ok := g.counters[e.Name]; ok {
				return c.data()
			}
			return nil
		},
		ErrorHandler: func(_ micro.Service, e *micro.NATSError) {
			log.Warn("gateway: NATS error", "subject", e.Subject, "err", e.Description)
		},
	})
	if err != nil {
		return nil, fmt.Errorf("gateway: add service: %w", err)
	}
	g.svc = svc
	for _, ep := range []struct {
		name, subject, doc string
		do                 func(micro.Request, *exchange)
	}{
		{EndpointSchedule, SubjectSchedule, "schedule the request body for delivery to <target>; headers Tock-Deliver-At or Tock-Delay", g.schedule},
		{EndpointCancel, SubjectCancel, "cancel the pending message <id>", g.cancel},
		{EndpointGet, SubjectGet, "tell the state of message <id>", g.get},
		{EndpointRedrive, SubjectRedrive, "schedule the dead letter <id> again, at once or at Tock-Deliver-At / Tock-Delay", g.redrive},
	} {
		err := svc.AddEndpoint(ep.name, g.handler(g.counters[ep.name], ep.do),
			micro.WithEndpointSubject(ep.subject),
			micro.WithEndpointMetadata(map[string]string{"description": ep.doc}))
		if err != nil {
			_ = svc.Stop()
			return nil, fmt.Errorf("gateway: add endpoint %s: %w", ep.name, err)
		}
	}
	// Once Start returns, the server knows the subscriptions: requests
	// from other connections reach the gateway.
	if err := nc.Flush(); err != nil {
		_ = svc.Stop()
		return nil, fmt.Errorf("gateway: flush subscriptions: %w", err)
	}
	return g, nil
}

// Stop stops the micro service: it drains the endpoint subscriptions and
// leaves $SRV discovery. Once Stop returns the gateway never calls the
// Scheduler again; requests still queued in the drain are answered 503
// (shutting down), and replies to calls already made are still sent when
// the Scheduler answers (while the connection is open).
func (g *Gateway) Stop() error {
	g.mu.Lock()
	already := g.stopped
	g.stopped = true
	g.mu.Unlock()
	if already {
		return nil
	}
	return g.svc.Stop()
}

// answer is a reply in the making: a JSON body, or an error.
type answer struct {
	body []byte
	err  *Error
	// buf, when set, holds body and goes back to replyBufs once the
	// reply is sent.
	buf *[]byte
}

// replyBufs holds the buffers accepted schedules' replies are appended
// into. Publishing copies a body out at once, so its buffer is free again
// when send returns; one per schedule was a third of the gateway's
// allocation in an ingest profile.
var replyBufs = sync.Pool{New: func() any { return new([]byte) }}

func jsonAnswer(v any, e *Error) answer {
	if e != nil {
		return answer{err: e}
	}
	b, err := json.Marshal(v)
	if err != nil {
		return answer{err: Internal("encode reply: %v", err)}
	}
	return answer{body: b}
}

func (g *Gateway) schedule(req micro.Request, x *exchange) {
	sr, e := ParseSchedule(req.Subject(), nats.Header(req.Headers()), req.Data(), g.clk.Now(), g.cfg)
	if e != nil {
		x.finish(answer{err: e})
		return
	}
	g.s.Schedule(sr, func(res slot.Result) { x.finish(scheduleAnswer(res)) })
}

// scheduleAnswer is jsonAnswer(ScheduleReply(res)), with an accepted
// schedule's reply appended by hand (AppendScheduleReply says why).
func scheduleAnswer(res slot.Result) answer {
	if res.Status == slot.OK && !res.Record.ID.IsZero() {
		buf := replyBufs.Get().(*[]byte)
		*buf = AppendScheduleReply((*buf)[:0], res.Record)
		return answer{body: *buf, buf: buf}
	}
	return jsonAnswer(ScheduleReply(res))
}

func (g *Gateway) cancel(req micro.Request, x *exchange) {
	id, e := ParseID(strings.TrimPrefix(req.Subject(), PrefixCancel))
	if e != nil {
		x.finish(answer{err: e})
		return
	}
	g.s.Cancel(id, func(res slot.Result) { x.finish(jsonAnswer(CancelReply(id, res))) })
}

func (g *Gateway) get(req micro.Request, x *exchange) {
	id, e := ParseID(strings.TrimPrefix(req.Subject(), PrefixGet))
	if e != nil {
		x.finish(answer{err: e})
		return
	}
	g.s.Get(id, func(res slot.Result) { x.finish(jsonAnswer(GetReply(id, res))) })
}

// handler wraps an endpoint's work so that its request gets exactly one
// reply, whoever answers, whenever, and even if the work panics.
func (g *Gateway) handler(c *counters, do func(micro.Request, *exchange)) micro.HandlerFunc {
	return func(req micro.Request) {
		x := &exchange{g: g, c: c, req: req, subject: req.Subject(), reply: req.Reply(), inHandler: true, size: int64(len(req.Data()))}
		c.inFlight.Add(1)
		n, bytes := g.inFlight.Add(1), g.inFlightBytes.Add(x.size)
		if over := g.overload(n, bytes); over != nil {
			x.finish(answer{err: over})
			x.leaveHandler()
			return
		}
		func() {
			defer func() {
				if p := recover(); p != nil {
					g.log.Error("gateway: panic while handling a request", "subject", req.Subject(), "panic", p, "stack", string(debug.Stack()))
					x.finish(answer{err: Internal("panic while handling the request")})
				}
			}()
			g.mu.RLock()
			defer g.mu.RUnlock()
			if g.stopped {
				x.finish(answer{err: ShuttingDown()})
				return
			}
			do(req, x) // x itself, not the method value x.finish: one allocation less per request
		}()
		x.leaveHandler()
	}
}

// overload is the 503 for a request that makes n requests and bytes of
// bodies in flight, nil if it is within bounds. Refusals are logged at
// most every overloadWarnEvery, with their count (an overload would
// otherwise log as fast as it refuses).
func (g *Gateway) overload(n, bytes int64) *Error {
	var e *Error
	switch {
	case g.cfg.MaxInFlight > 0 && n > int64(g.cfg.MaxInFlight):
		e = g.overloaded
	case g.cfg.MaxInFlightBytes > 0 && bytes > int64(g.cfg.MaxInFlightBytes) && n > 1:
		// n > 1: a single request over the byte bound (MaxPayload may be
		// bigger) is still served, alone.
		e = g.overloadedBytes
	default:
		return nil
	}
	g.overloads.Add(1)
	now, last := g.clk.Now().UnixNano(), g.lastOverloadWarn.Load()
	if now-last >= int64(overloadWarnEvery) && g.lastOverloadWarn.CompareAndSwap(last, now) {
		g.log.Warn("gateway: overloaded; answering 503", "refused", g.overloads.Swap(0), "in_flight", n, "in_flight_bytes", bytes,
			"max_inflight", g.cfg.MaxInFlight, "max_inflight_bytes", g.cfg.MaxInFlightBytes)
	}
	return e
}

const overloadWarnEvery = 10 * time.Second

// exchange is one request and its reply.
//
// micro's Request records the outcome of Respond/Error in a field that
// micro reads, unsynchronized, right after the handler returns (for its
// stats), so Request methods must not be called from another goroutine
// or after the handler returned. An answer that comes while the handler
// runs is held and sent through the Request when the handler is done
// (micro counts it in its stats); one that comes later is published
// straight to the reply subject, with the same headers Request.Error
// would set.
type exchange struct {
	g       *Gateway
	c       *counters
	req     micro.Request // only while the handler runs
	subject string
	reply   string
	size    int64 // body bytes, counted in Gateway.inFlightBytes

	mu        sync.Mutex
	inHandler bool
	answered  bool
	held      *answer
}

func (x *exchange) finish(a answer) {
	x.mu.Lock()
	if x.answered {
		x.mu.Unlock()
		x.g.log.Error("gateway: second reply to one request ignored", "subject", x.subject)
		return
	}
	x.answered = true
	if x.inHandler {
		x.held = &a
		x.mu.Unlock()
		return
	}
	x.mu.Unlock()
	x.send(a, false)
}

func (x *exchange) leaveHandler() {
	x.mu.Lock()
	x.inHandler = false
	a := x.held
	x.mu.Unlock()
	if a != nil {
		x.send(*a, true)
	}
}

func (x *exchange) send(a answer, inHandler bool) {
	x.c.inFlight.Add(-1)
	x.g.inFlight.Add(-1)
	x.g.inFlightBytes.Add(-x.size)
	if a.buf != nil {
		defer replyBufs.Put(a.buf)
	}
	var code string
	if a.err != nil {
		code = strconv.Itoa(a.err.Code)
		x.c.countError(code)
		if a.err.Code >= 500 && a.err != x.g.overloaded && a.err != x.g.overloadedBytes {
			x.g.log.Warn("gateway: request failed", "subject", x.subject, "code", a.err.Code, "description", a.err.Description)
		}
	}
	if x.reply == "" {
		return // a publish, not a request: nobody to tell
	}
	var err error
	switch {
	case inHandler && a.err == nil:
		err = x.req.Respond(a.body)
	case inHandler:
		err = x.req.Error(code, a.err.Description, ErrorBody(a.err))
	case a.err == nil:
		err = x.g.nc.Publish(x.reply, a.body)
	default:
		err = x.g.nc.PublishMsg(&nats.Msg{
			Subject: x.reply,
			Header: nats.Header{
				micro.ErrorHeader:     []string{a.err.Description},
				micro.ErrorCodeHeader: []string{code},
			},
			Data: ErrorBody(a.err),
		})
	}
	if err != nil {
		x.g.log.Warn("gateway: cannot send reply", "subject", x.subject, "err", err)
	}
}
