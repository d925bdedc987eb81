package sim

import (
	"encoding/binary"
	"hash"
	"hash/fnv"

	"github.com/tockd/tock/msgid"
)

// Trace event kinds: everything observable outside the scheduler.
const (
	evRequest byte = iota + 1
	evScheduleReply
	evCancelRequest
	evCancelReply
	evGetRequest
	evGetReply
	evDelivery
	evFault
	evPurge
	evInject // a corrupt record injected: detail slot<<8 | corruption
)

// tracer hashes every observable event: kind, virtual ms, id, detail.
type tracer struct {
	h   hash.Hash64
	n   uint64
	buf [41]byte
}

func (t *tracer) init() { t.h = fnv.New64a() }

func (t *tracer) event(kind byte, at int64, id msgid.ID, detail uint64) {
	t.n++
	t.buf[0] = kind
	binary.BigEndian.PutUint64(t.buf[1:], uint64(at))
	copy(t.buf[9:], id[:])
	binary.BigEndian.PutUint64(t.buf[33:], detail)
	t.h.Write(t.buf[:])
}

func (t *tracer) sum() uint64 { return t.h.Sum64() }
