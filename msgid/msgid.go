// Package msgid defines tock's message ids.
//
// An id is 24 bytes: the deliver time in Unix milliseconds (8 bytes, big
// endian), an acceptance stamp (8 bytes, big endian) that grows with every
// accepted message, and 8 random bytes. So ids sort by (deliver time,
// acceptance order), which is exactly the firing order, and any holder of
// an id can find the time slot that owns it without an index. The random
// part sorts last and only makes ids unguessable: deliver time and stamp
// (wall ms << 20) are predictable from when a message was scheduled, and
// an id is all it takes to cancel one.
//
// The text form is lower-case base32hex without padding: 39 characters
// from [0-9a-v], a valid single NATS subject token. Ids minted before ids
// had a random part have it zero and keep their 26-character form of the
// first 16 bytes; a new id never has a zero random part (Mint redraws), so
// every id has exactly one text form, and text order is byte order.
package msgid

import (
	"bytes"
	"crypto/rand"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
)

// ID identifies one scheduled message.
type ID [24]byte

const (
	// Len is the length of an id's text form.
	Len = 39
	// LegacyLen is the length of the text form of an id whose random part
	// is zero (minted before ids had one).
	LegacyLen = 26
)

var enc = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// ErrInvalid is returned by Parse for text that is not an id.
var ErrInvalid = errors.New("invalid id")

// New returns the id of a message due at deliverAt (Unix ms) accepted with
// stamp, with no random part: the shape of ids minted before they had one.
// The scheduler mints with Mint; New is for those ids and for tests.
func New(deliverAt int64, stamp uint64) ID { return Compose(deliverAt, stamp, 0) }

// Compose returns the id made of the three parts.
func Compose(deliverAt int64, stamp, random uint64) ID {
	var id ID
	binary.BigEndian.PutUint64(id[:8], uint64(deliverAt))
	binary.BigEndian.PutUint64(id[8:16], stamp)
	binary.BigEndian.PutUint64(id[16:], random)
	return id
}

// Source supplies the random parts of new ids. *math/rand/v2.Rand is
// one (the simulator draws from its seed); Crypto is the one to serve with.
type Source interface{ Uint64() uint64 }

// Crypto draws from crypto/rand. Safe for concurrent use.
var Crypto Source = cryptoSource{}

type cryptoSource struct{}

func (cryptoSource) Uint64() uint64 {
	var b [8]byte
	rand.Read(b[:]) // never fails: it crashes the program rather than return weak bytes
	return binary.BigEndian.Uint64(b[:])
}

// Mint returns a new id with a random part drawn from src, redrawn while
// zero so it never looks like a legacy id.
func Mint(deliverAt int64, stamp uint64, src Source) ID {
	r := src.Uint64()
	for r == 0 {
		r = src.Uint64()
	}
	return Compose(deliverAt, stamp, r)
}

// DeliverAt is the deliver time, in Unix milliseconds, encoded in the id.
func (id ID) DeliverAt() int64 { return int64(binary.BigEndian.Uint64(id[:8])) }

// Stamp is the acceptance stamp encoded in the id.
func (id ID) Stamp() uint64 { return binary.BigEndian.Uint64(id[8:16]) }

// Random is the random part of the id; zero for a legacy id.
func (id ID) Random() uint64 { return binary.BigEndian.Uint64(id[16:]) }

// Legacy reports whether id has no random part (minted before ids had one,
// or made with New): its text form is the 26-character one.
func (id ID) Legacy() bool { return id.Random() == 0 }

// IsZero reports whether id is the zero id.
func (id ID) IsZero() bool { return id == ID{} }

// Compare orders ids by deliver time, then stamp, then random part, which
// is their byte order and their text order.
func (id ID) Compare(other ID) int { return bytes.Compare(id[:], other[:]) }

// text is the part of id its text form encodes.
func (id *ID) text() []byte {
	if id.Legacy() {
		return id[:16]
	}
	return id[:]
}

func (id ID) String() string { return enc.EncodeToString(id.text()) }

// Append appends the text form of id to dst: String without its
// allocation, for replies that are built into one buffer.
func (id ID) Append(dst []byte) []byte { return enc.AppendEncode(dst, id.text()) }

// Parse reads the text form of an id, either length.
func Parse(s string) (ID, error) {
	var id ID
	part := id[:]
	switch len(s) {
	case Len:
	case LegacyLen:
		part = id[:16]
	default:
		return id, fmt.Errorf("%w: %q has %d characters, want %d (or %d for an old id)", ErrInvalid, s, len(s), Len, LegacyLen)
	}
	n, err := enc.Decode(part, []byte(s))
	if err != nil || n != len(part) {
		return ID{}, fmt.Errorf("%w: %q", ErrInvalid, s)
	}
	// base32 leaves spare bits in the last character (2 for 16 bytes, 3
	// for 24); a canonical id has them zero, and a zero random part only
	// has the short form, so every id has exactly one text form.
	if id.String() != s {
		return ID{}, fmt.Errorf("%w: %q is not canonical", ErrInvalid, s)
	}
	return id, nil
}

// AcceptedAt is about when the message was accepted, Unix ms, from its
// stamp (Stamper): never earlier, later by the stamps taken beyond 2^20 in
// one millisecond or after the clock stepped back.
func (id ID) AcceptedAt() int64 { return int64(id.Stamp() >> 20) }

// Stamper hands out strictly increasing acceptance stamps. Stamps start
// from the wall time (ms<<20) so they keep growing across restarts, and
// fall back to +1 when more than 2^20 are taken in one millisecond or the
// clock steps back. Not safe for concurrent use.
type Stamper struct{ last uint64 }

// Next returns a stamp greater than every earlier one.
func (s *Stamper) Next(nowMs int64) uint64 {
	v := uint64(nowMs) << 20
	if v <= s.last {
		v = s.last + 1
	}
	s.last = v
	return v
}
