// Package service assembles a running tock: the NATS server (embedded or
// external), the journal, the slot actors, the delivery publisher and the
// NATS API, and takes them down again in order.
package service

import (
	"log/slog"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tockd/tock/deadletter"
	"github.com/tockd/tock/subject"
)

// Config is everything `tock serve` can set.
type Config struct {
	// DataDir holds the embedded server's JetStream store. Ignored with NATSURL.
	DataDir string
	// Listen is the embedded server's client address, HOST:PORT; port -1
	// picks a free one. Empty: NATSConfig's listen address, else DefaultListen.
	Listen string
	// NATSConfig is a nats-server configuration file for the embedded
	// server (users, permissions, TLS, limits); tock adds its private
	// account on top (service/accounts.go). Ignored with NATSURL.
	NATSConfig string
	// AppAccount is the account of NATSConfig whose clients use tock and
	// receive its deliveries. Empty: the account of no_auth_user if the
	// file sets one, else the global account.
	AppAccount string
	// Insecure lets the embedded server accept clients without
	// credentials on a non-loopback address.
	Insecure bool
	// NATSURL, when set, uses that JetStream-enabled server instead of embedding one.
	NATSURL string
	// ConnectOptions authenticate tock to NATSURL (credentials, nkeys,
	// TLS: see cmd/tock/natsflags.go); both of tock's connections get them,
	// before its own options. Unused with the embedded server. NATSURL
	// may carry user:password@ too; it is redacted wherever tock prints it.
	ConnectOptions []nats.Option
	// MaxDelay bounds how far ahead a message may be scheduled.
	MaxDelay time.Duration
	// MaxPayload bounds body plus headers of a scheduled message, in bytes.
	MaxPayload int
	// MaxInFlight bounds the requests tock holds unanswered, and
	// MaxInFlightBytes their bodies; beyond either a request gets 503 at
	// once (gateway.Config). Zero: the default; negative: no bound.
	MaxInFlight      int
	MaxInFlightBytes int
	// DeliveryMaxAttempts and DeliveryMaxAge bound the retries of a
	// delivery before it is dead-lettered (a message's Tock-Max-Attempts
	// and Tock-Max-Age override them). Zero: the default; negative: no
	// bound.
	DeliveryMaxAttempts int
	DeliveryMaxAge      time.Duration
	// DeadRetention is how long the dead-letter stream keeps a dead letter.
	DeadRetention time.Duration
	// DeadLetters are JetStream consumers of the application account
	// whose messages, once delivered max_deliver times without an ack,
	// tock moves into the dead-letter stream (package deadletter).
	DeadLetters []deadletter.Source
	// AllowTargets limits the targets producers may schedule to; the zero
	// value allows every subject a producer may schedule to at all.
	AllowTargets subject.Allow
	// Retention is how long delivered and cancelled messages stay queryable.
	Retention time.Duration
	// SlotWidth is the span of deliver times one slot actor owns.
	SlotWidth time.Duration
	// Horizon is how long before its start a slot is loaded into memory.
	Horizon time.Duration
	// SlotMemory is the body bytes one slot keeps in memory when it loads;
	// bodies beyond it stay in the journal and are read back as they come
	// due (actors/slot/refill.go). Negative: no bound.
	SlotMemory int
	// MaxLookupSlots bounds the slots loaded at once only to answer gets
	// and cancels (actors.Config.MaxLookupSlots). Zero: its default;
	// negative: no bound.
	MaxLookupSlots int
	// SyncAlways makes the embedded server fsync every JetStream write
	// before acknowledging it, so an acknowledged message survives an OS
	// crash or power loss. Without it JetStream fsyncs every 2 minutes
	// and acknowledged writes survive a process crash (kill -9) only.
	// The journal's group commit keeps one write per batch, not per
	// message. Ignored with NATSURL (that server's sync_interval rules).
	SyncAlways bool
	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger
}

// Defaults for Config's zero fields.
const (
	DefaultDataDir    = "./tock-data"
	DefaultListen     = "127.0.0.1:4222"
	DefaultMaxDelay   = 365 * 24 * time.Hour
	DefaultMaxPayload = 512 << 10
	// DefaultMaxInFlight is 16 clients with the bench's 4,096 requests in
	// flight each; DefaultMaxInFlightBytes keeps what requests hold far
	// below what a 512 KiB payload times that count would be, and well
	// within the default memory limit: a body held is held several times
	// over (the request, its journal record, the server's copies). Under
	// twice the load tock takes, with 4 KiB bodies, 256 MiB peaked at
	// 1.1 GiB of RSS and 5,600 accepted/s; 64 MiB at 940 MiB and 6,800/s
	// (chaos.TestOverload).
	// DefaultDeliveryMaxAge keeps an order-close timer trying through a
	// day of trouble at its target; attempts are not bounded by default.
	DefaultDeliveryMaxAge   = 24 * time.Hour
	DefaultDeadRetention    = 72 * time.Hour
	DefaultMaxInFlight      = 65536
	DefaultMaxInFlightBytes = 64 << 20
	DefaultRetention        = 72 * time.Hour
	DefaultSlotWidth        = time.Minute
	DefaultHorizon          = 10 * time.Second
	// DefaultSlotMemory holds a busy minute whole (10,000 messages/s of
	// 256 B is 154 MiB), so refills happen only for bigger slots.
	DefaultSlotMemory = 256 << 20
)

func (c Config) withDefaults() Config {
	if c.DataDir == "" {
		c.DataDir = DefaultDataDir
	}
	if c.Listen == "" && c.NATSConfig == "" {
		c.Listen = DefaultListen
	}
	if c.MaxDelay <= 0 {
		c.MaxDelay = DefaultMaxDelay
	}
	if c.MaxPayload <= 0 {
		c.MaxPayload = DefaultMaxPayload
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.MaxInFlightBytes == 0 {
		c.MaxInFlightBytes = DefaultMaxInFlightBytes
	}
	if c.DeliveryMaxAge == 0 {
		c.DeliveryMaxAge = DefaultDeliveryMaxAge
	}
	if c.DeadRetention <= 0 {
		c.DeadRetention = DefaultDeadRetention
	}
	if c.Retention <= 0 {
		c.Retention = DefaultRetention
	}
	if c.SlotWidth <= 0 {
		c.SlotWidth = DefaultSlotWidth
	}
	if c.Horizon <= 0 {
		c.Horizon = DefaultHorizon
	}
	if c.SlotMemory == 0 {
		c.SlotMemory = DefaultSlotMemory
	}
	if c.Logger == nil {
		c.Logger = slog.New(slog.DiscardHandler)
	}
	return c
}
