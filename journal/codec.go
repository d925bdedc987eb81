package journal

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/bits"
	"slices"
	"unsafe"
)

// Record format, version 2. Integers are Go varints (encoding/binary):
// "u" marks unsigned, "zz" zig-zag signed.
//
//	record   = version:byte batch+
//	batch    = count:u event*count
//	event    = head:byte at:zz [id] [delivery]
//	head     = kind (low 6 bits) | 0x80 if ID is not zero | 0x40 if any of
//	           Target, DeliverAt, Header, Body is set
//	at       = At minus the At of the previous event of the batch (0 before the first)
//	id       = (ID.DeliverAt() - At):zz  ID.Stamp():8 bytes big endian  ID.Random():8 bytes big endian
//	delivery = (DeliverAt - ID.DeliverAt()):zz target:str header body:str
//	header   = keys:u (key:str values:u value:str*values)*keys, keys sorted
//	str      = len:u bytes
//
// Why this shape:
//   - A record is a concatenation of batches, each restarting the At delta
//     chain, so the NATS journal merges the appends of one slot into one
//     record by concatenating their encodings, without re-encoding.
//   - Events of a batch happen at about the same time and an id's deliver
//     time is close to At (fire, cancel) or to DeliverAt (schedule), so
//     deltas keep those 8-byte times to one to four bytes.
//   - The flags make every Event round-trip exactly (a Closed event with a
//     stray id keeps it) while zero fields cost nothing.
//
// Version 1 is the same without ID.Random() (ids had no random part then):
// it is still decoded, to a zero random part, so journals written before
// keep loading; only version 2 is written.
const (
	recordVersion   = 2
	recordVersionV1 = 1
)

const (
	flagID       = 0x80
	flagDelivery = 0x40
	kindMask     = 0x3f
	// minEventBytes is the smallest encoded event (head and at), used to
	// bound counts read from untrusted input.
	minEventBytes = 2
	// maxPrealloc caps capacity reserved from a count read from the input.
	maxPrealloc = 1024
	// MaxRecordEvents caps the events of one record. A full default record
	// (1 MiB) of the smallest events tock writes (a Fired, 11 bytes)
	// holds about 95,000; this leaves room for 8 MiB records.
	MaxRecordEvents = 1 << 20
	// maxExpansion and expansionSlack bound what decoding one record may
	// allocate: expansionSlack plus maxExpansion times its size, charged
	// by the decoder as it goes (decoder.charge). The largest ratio tock
	// itself writes is a tiny Scheduled event with one header, about 25.
	maxExpansion   = 64
	expansionSlack = 64 << 10
	// Charges, in bytes: a decoded Event, a header map and each of its
	// keys (Go's small-map group), a string header in a value slice.
	eventCost     = int(unsafe.Sizeof(Event{}))
	headerCost    = 384
	headerKeyCost = 48
	stringCost    = int(unsafe.Sizeof(""))
)

var (
	// ErrInvalidEvent: an event cannot be stored as given (unknown kind).
	ErrInvalidEvent = errors.New("invalid journal event")
	// ErrTooLarge: one event does not fit in a record of the size asked for.
	ErrTooLarge = errors.New("journal event too large")
)

// Validate checks what the encoding cannot represent. Appends check it
// first so a bad event fails its own append instead of poisoning a slot.
func Validate(events []Event) error {
	for i := range events {
		if k := events[i].Kind; k < Scheduled || k > Dead {
			return fmt.Errorf("%w: event %d has kind %d", ErrInvalidEvent, i, uint8(k))
		}
	}
	return nil
}

// EncodeRecord appends the encoding of events as one record to dst.
// Header keys are written sorted, so equal events encode to equal bytes.
// It panics if an event's Kind is not one of the defined kinds: that is a
// programming error, and storing it would make the slot unloadable.
func EncodeRecord(dst []byte, events []Event) []byte {
	if err := Validate(events); err != nil {
		panic(err)
	}
	dst = append(dst, recordVersion)
	return appendBatch(dst, events)
}

func appendBatch(dst []byte, events []Event) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(events)))
	var prevAt int64
	for i := range events {
		dst = appendEvent(dst, &events[i], prevAt)
		prevAt = events[i].At
	}
	return dst
}

// appendEvent encodes ev with its At relative to prevAt. Differences wrap
// around on overflow; decoding wraps back, so every int64 round-trips.
func appendEvent(dst []byte, ev *Event, prevAt int64) []byte {
	head := byte(ev.Kind)
	hasID, hasDelivery := !ev.ID.IsZero(), hasDeliveryFields(ev)
	if hasID {
		head |= flagID
	}
	if hasDelivery {
		head |= flagDelivery
	}
	dst = append(dst, head)
	dst = binary.AppendVarint(dst, ev.At-prevAt)
	if hasID {
		dst = binary.AppendVarint(dst, ev.ID.DeliverAt()-ev.At)
		dst = append(dst, ev.ID[8:]...) // stamp and random part
	}
	if hasDelivery {
		dst = binary.AppendVarint(dst, ev.DeliverAt-ev.ID.DeliverAt())
		dst = appendString(dst, ev.Target)
		dst = appendHeader(dst, ev.Header)
		dst = binary.AppendUvarint(dst, uint64(len(ev.Body)))
		dst = append(dst, ev.Body...)
	}
	return dst
}

func hasDeliveryFields(ev *Event) bool {
	return ev.Target != "" || ev.DeliverAt != 0 || len(ev.Header) > 0 || len(ev.Body) > 0
}

func appendString(dst []byte, s string) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(s)))
	return append(dst, s...)
}

func appendHeader(dst []byte, h Header) []byte {
	dst = binary.AppendUvarint(dst, uint64(len(h)))
	if len(h) == 0 {
		return dst
	}
	var buf [8]string
	keys := buf[:0]
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		dst = appendString(dst, k)
		dst = binary.AppendUvarint(dst, uint64(len(h[k])))
		for _, v := range h[k] {
			dst = appendString(dst, v)
		}
	}
	return dst
}

// DecodeRecord decodes a record written by EncodeRecord, or several
// concatenated batches (as the NATS journal stores merged appends). The
// result never aliases b: callers may reuse b. Empty Header and Body decode
// as nil. Errors wrap ErrCorrupt.
func DecodeRecord(b []byte) ([]Event, error) {
	return DecodeAppend(nil, b, false)
}

// DecodeAppend appends the events of record b to dst. With alias, bodies
// point into b instead of being copied: for a b the caller never reuses,
// and whose reader copies what it keeps (a slot stores bodies in its own
// chunks), the copy would be one allocation per message for nothing.
func DecodeAppend(dst []Event, b []byte, alias bool) ([]Event, error) {
	if len(b) == 0 {
		return dst, fmt.Errorf("%w: empty record", ErrCorrupt)
	}
	d := decoder{b: b, off: 1, alias: alias, idTail: 16, budget: expansionSlack + maxExpansion*len(b)}
	switch b[0] {
	case recordVersion:
	case recordVersionV1:
		d.idTail = 8 // the stamp alone
	default:
		return dst, fmt.Errorf("%w: unknown record version %d", ErrCorrupt, b[0])
	}
	for {
		var err error
		if dst, err = d.batch(dst); err != nil {
			return dst, err
		}
		if d.off == len(d.b) {
			return dst, nil
		}
	}
}

// decoder reads one record. Every length is checked against the bytes
// left before anything is allocated, so hostile input cannot make it
// allocate more than a small multiple of its own size.
type decoder struct {
	b   []byte
	off int
	// strs interns targets and header keys: they repeat across the events
	// of a record, and one string per distinct value saves allocations.
	strs  map[string]string
	alias bool // bodies alias b
	// events counts the record's events so far, against MaxRecordEvents;
	// budget is what it may still allocate (see maxExpansion).
	events int
	budget int
	// idTail is how many id bytes follow the deliver time: stamp and
	// random part, or in version 1 the stamp alone.
	idTail int
}

// charge takes n bytes from the allocation budget before they are
// allocated, so no record, however crafted, decodes into more than a
// bounded multiple of its size.
func (d *decoder) charge(n int) error {
	if n > d.budget {
		return d.errorf("record decodes to more than %d times its %d bytes", maxExpansion, len(d.b))
	}
	d.budget -= n
	return nil
}

func (d *decoder) left() int { return len(d.b) - d.off }

func (d *decoder) errorf(format string, args ...any) error {
	return fmt.Errorf("%w: at byte %d: %s", ErrCorrupt, d.off, fmt.Sprintf(format, args...))
}

func (d *decoder) batch(dst []Event) ([]Event, error) {
	n, err := d.count("event count", minEventBytes)
	if err != nil {
		return dst, err
	}
	if d.events += n; d.events > MaxRecordEvents {
		return dst, d.errorf("%d events, more than the %d a record may hold", d.events, MaxRecordEvents)
	}
	// n is only bounded by the input size, and an Event is ~60 times a
	// minimal encoded one: let append grow past a modest preallocation.
	dst = slices.Grow(dst, min(n, maxPrealloc))
	var prevAt int64
	for i := 0; i < n; i++ {
		var ev Event
		if err := d.charge(eventCost); err != nil {
			return dst, err
		}
		if err := d.event(&ev, prevAt); err != nil {
			return dst, fmt.Errorf("event %d: %w", i, err)
		}
		prevAt = ev.At
		dst = append(dst, ev)
	}
	return dst, nil
}

func (d *decoder) event(ev *Event, prevAt int64) error {
	head, err := d.byte("event head")
	if err != nil {
		return err
	}
	ev.Kind = Kind(head & kindMask)
	if ev.Kind < Scheduled || ev.Kind > Dead {
		return d.errorf("unknown event kind %d", uint8(ev.Kind))
	}
	delta, err := d.varint("at")
	if err != nil {
		return err
	}
	ev.At = prevAt + delta
	if head&flagID != 0 {
		if err := d.id(ev); err != nil {
			return err
		}
	}
	if head&flagDelivery != 0 {
		return d.delivery(ev)
	}
	return nil
}

func (d *decoder) id(ev *Event) error {
	delta, err := d.varint("id deliver time")
	if err != nil {
		return err
	}
	tail, err := d.bytes("id stamp and random part", d.idTail)
	if err != nil {
		return err
	}
	binary.BigEndian.PutUint64(ev.ID[:8], uint64(ev.At+delta))
	copy(ev.ID[8:], tail)
	return nil
}

func (d *decoder) delivery(ev *Event) error {
	delta, err := d.varint("deliver at")
	if err != nil {
		return err
	}
	ev.DeliverAt = ev.ID.DeliverAt() + delta
	if ev.Target, err = d.str("target", true); err != nil {
		return err
	}
	if ev.Header, err = d.header(); err != nil {
		return err
	}
	body, err := d.lenBytes("body")
	if err != nil {
		return err
	}
	switch {
	case len(body) == 0:
	case d.alias:
		ev.Body = body[:len(body):len(body)]
	default:
		if err := d.charge(len(body)); err != nil {
			return err
		}
		ev.Body = slices.Clone(body)
	}
	return nil
}

func (d *decoder) header() (Header, error) {
	// A key takes at least two bytes: its length and its value count.
	n, err := d.count("header key count", 2)
	if err != nil || n == 0 {
		return nil, err
	}
	if err := d.charge(headerCost + n*headerKeyCost); err != nil {
		return nil, err
	}
	h := make(Header, min(n, maxPrealloc))
	for i := 0; i < n; i++ {
		k, err := d.str("header key", true)
		if err != nil {
			return nil, err
		}
		if _, dup := h[k]; dup {
			return nil, d.errorf("duplicate header key %q", k)
		}
		if h[k], err = d.values(); err != nil {
			return nil, fmt.Errorf("header %q: %w", k, err)
		}
	}
	return h, nil
}

func (d *decoder) values() ([]string, error) {
	n, err := d.count("header value count", 1)
	if err != nil || n == 0 {
		return nil, err
	}
	if err := d.charge(n * stringCost); err != nil {
		return nil, err
	}
	vs := make([]string, 0, min(n, maxPrealloc))
	for range n {
		v, err := d.str("header value", false)
		if err != nil {
			return nil, err
		}
		vs = append(vs, v)
	}
	return vs, nil
}

// count reads an element count and rejects one that could not fit in the
// bytes left, given each element takes at least min bytes.
func (d *decoder) count(what string, min int) (int, error) {
	n, err := d.uvarint(what)
	if err != nil {
		return 0, err
	}
	if n > uint64(d.left()/min) {
		return 0, d.errorf("%s %d exceeds the %d bytes left", what, n, d.left())
	}
	return int(n), nil
}

func (d *decoder) str(what string, intern bool) (string, error) {
	b, err := d.lenBytes(what)
	if err != nil || len(b) == 0 {
		return "", err
	}
	if !intern {
		if err := d.charge(len(b)); err != nil {
			return "", err
		}
		return string(b), nil
	}
	if s, ok := d.strs[string(b)]; ok {
		return s, nil
	}
	if err := d.charge(len(b) + headerKeyCost); err != nil {
		return "", err
	}
	if d.strs == nil {
		d.strs = make(map[string]string)
	}
	s := string(b)
	d.strs[s] = s
	return s, nil
}

// lenBytes reads a length-prefixed byte string; the result aliases d.b.
func (d *decoder) lenBytes(what string) ([]byte, error) {
	n, err := d.uvarint(what + " length")
	if err != nil {
		return nil, err
	}
	if n > uint64(d.left()) {
		return nil, d.errorf("%s length %d exceeds the %d bytes left", what, n, d.left())
	}
	return d.bytes(what, int(n))
}

func (d *decoder) bytes(what string, n int) ([]byte, error) {
	if n > d.left() {
		return nil, d.errorf("%s: need %d bytes, %d left", what, n, d.left())
	}
	b := d.b[d.off : d.off+n]
	d.off += n
	return b, nil
}

func (d *decoder) byte(what string) (byte, error) {
	b, err := d.bytes(what, 1)
	if err != nil {
		return 0, err
	}
	return b[0], nil
}

func (d *decoder) uvarint(what string) (uint64, error) {
	v, n := binary.Uvarint(d.b[d.off:])
	if n <= 0 {
		return 0, d.errorf("bad %s varint", what)
	}
	d.off += n
	return v, nil
}

func (d *decoder) varint(what string) (int64, error) {
	v, n := binary.Varint(d.b[d.off:])
	if n <= 0 {
		return 0, d.errorf("bad %s varint", what)
	}
	d.off += n
	return v, nil
}

// EncodeChunks encodes events as records of at most max bytes, splitting
// between events; one event that alone exceeds max is ErrTooLarge.
func EncodeChunks(events []Event, max int) ([][]byte, error) {
	if rec := EncodeRecord(nil, events); len(rec) <= max {
		return [][]byte{rec}, nil
	}
	var chunks [][]byte
	var body []byte // events of the current chunk
	var count int
	var prevAt int64
	for i := range events {
		start := len(body)
		body = appendEvent(body, &events[i], prevAt)
		if count > 0 && chunkSize(count+1, len(body)) > max {
			// Event i does not fit: close the chunk before it and start
			// the next with it, re-encoded to restart the At deltas.
			chunks = append(chunks, chunk(count, body[:start]))
			body, count = appendEvent(nil, &events[i], 0), 0
		}
		if count == 0 && chunkSize(1, len(body)) > max {
			return nil, fmt.Errorf("%w: event %d encodes to %d bytes, records hold %d", ErrTooLarge, i, chunkSize(1, len(body)), max)
		}
		count++
		prevAt = events[i].At
	}
	return append(chunks, chunk(count, body)), nil
}

func chunkSize(count, bodyLen int) int {
	return 1 + uvarintLen(uint64(count)) + bodyLen
}

func uvarintLen(v uint64) int { return (bits.Len64(v|1) + 6) / 7 }

func chunk(count int, body []byte) []byte {
	c := make([]byte, 0, chunkSize(count, len(body)))
	c = append(c, recordVersion)
	c = binary.AppendUvarint(c, uint64(count))
	return append(c, body...)
}

// AppendBatches appends the batches of record rec to record dst: the two
// concatenated are one record holding dst's events, then rec's. Both must
// be of one version (as EncodeRecord writes them): the batches of another
// would be misread.
func AppendBatches(dst, rec []byte) []byte {
	if dst[0] != rec[0] {
		panic(fmt.Sprintf("journal: appending a version %d record to a version %d one", rec[0], dst[0]))
	}
	return append(dst, rec[1:]...)
}
