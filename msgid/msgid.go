// Package msgid defines tock's message ids.
//
// An id is 16 bytes: the deliver time in Unix milliseconds (8 bytes, big
// endian) followed by an acceptance stamp (8 bytes, big endian) that grows
// with every accepted message. So ids sort by (deliver time, acceptance
// order), which is exactly the firing order, and any holder of an id can
// find the time slot that owns it without an index. The text form is
// lower-case base32hex without padding: 26 characters from [0-9a-v], a
// valid single NATS subject token.
package msgid

import (
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
)

// ID identifies one scheduled message.
type ID [16]byte

// Len is the length of an ID's text form.
const Len = 26

var enc = base32.NewEncoding("0123456789abcdefghijklmnopqrstuv").WithPadding(base32.NoPadding)

// ErrInvalid is returned by Parse for text that is not an id.
var ErrInvalid = errors.New("invalid id")

// New returns the id of a message due at deliverAt (Unix ms) accepted with stamp.
func New(deliverAt int64, stamp uint64) ID {
	var id ID
	binary.BigEndian.PutUint64(id[:8], uint64(deliverAt))
	binary.BigEndian.PutUint64(id[8:], stamp)
	return id
}

// DeliverAt is the deliver time, in Unix milliseconds, encoded in the id.
func (id ID) DeliverAt() int64 { return int64(binary.BigEndian.Uint64(id[:8])) }

// Stamp is the acceptance stamp encoded in the id.
func (id ID) Stamp() uint64 { return binary.BigEndian.Uint64(id[8:]) }

// IsZero reports whether id is the zero id.
func (id ID) IsZero() bool { return id == ID{} }

func (id ID) String() string { return enc.EncodeToString(id[:]) }

// Append appends the text form of id to dst: String without its
// allocation, for replies that are built into one buffer.
func (id ID) Append(dst []byte) []byte { return enc.AppendEncode(dst, id[:]) }

// Parse reads the text form of an id.
func Parse(s string) (ID, error) {
	var id ID
	if len(s) != Len {
		return id, fmt.Errorf("%w: %q has %d characters, want %d", ErrInvalid, s, len(s), Len)
	}
	n, err := enc.Decode(id[:], []byte(s))
	if err != nil || n != len(id) {
		return ID{}, fmt.Errorf("%w: %q", ErrInvalid, s)
	}
	// base32 of 16 bytes leaves 2 spare bits in the last character; a
	// canonical id has them zero, so every id has exactly one text form.
	if id.String() != s {
		return ID{}, fmt.Errorf("%w: %q is not canonical", ErrInvalid, s)
	}
	return id, nil
}

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
