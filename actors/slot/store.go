package slot

import (
	"github.com/tockd/tock/journal"
	"github.com/tockd/tock/msgid"
)

// A slot may hold a million messages. They are stored without a Go
// pointer per message: fixed-size entries in one slice, a map from id to
// position whose key and value hold no pointers, bodies copied into large
// byte chunks, and the due order as a heap of positions. The garbage
// collector then has next to nothing to trace however many messages are
// resident. With a pointer per field, every GC cycle traced each resident
// message, and under a steady 10,000 fires/s those cycles showed up as
// firing latency (see docs/ARCHITECTURE.md).

// entry is one message; it holds no pointers.
type entry struct {
	id        msgid.ID
	deliverAt int64 // Unix ms
	doneAt    int64 // Unix ms of delivery or cancel
	target    uint32
	header    uint32 // position+1 in store.headers; 0: no header
	chunk     uint32 // the body is chunks[chunk][off : off+n]
	off, n    uint32
	state     State
	// cold: the body (n bytes) is not in the chunks but only in the
	// journal, because the slot loaded over its body budget; refill
	// brings it back before the message fires. A cold entry keeps the
	// sequence of the journal record holding its body in chunk and off,
	// which it does not use meanwhile: a refill reads those records only,
	// at no cost per entry.
	cold bool
}

// record is the journal sequence of a cold entry's record.
func (e *entry) record() uint64 { return uint64(e.chunk)<<32 | uint64(e.off) }

func (e *entry) setRecord(seq uint64) { e.chunk, e.off = uint32(seq>>32), uint32(seq) }

const (
	// chunkSize is the largest chunk small bodies share. Chunks grow to it
	// by doubling from firstChunk, so a slot holding a few small bodies
	// (most slots) allocates a few hundred bytes, not a whole chunk: with
	// 1 MiB from the first body on, every slot load cleared 1 MiB, and
	// loading thousands of small slots spent its time zeroing memory.
	chunkSize  = 1 << 20
	firstChunk = 512
	// Bodies above this get a chunk of their own, so a chunk wastes at
	// most this much at its end.
	ownChunk = 64 << 10
	// defaultCompactMin is the dead body bytes below which the chunks
	// are never rewritten.
	defaultCompactMin = 64 << 20
)

type store struct {
	entries []entry
	index   map[msgid.ID]int32
	targets []string // distinct targets; few per slot
	target  map[string]uint32
	headers []journal.Header
	chunks  [][]byte
	open    int // the chunk small bodies go to; -1: none
	live    int // body bytes of unsettled entries, in the chunks
	dead    int // body bytes of settled entries still in the chunks
	cold    int // body bytes of unsettled entries not in memory
	due     dueHeap
	// compactMin is the dead body bytes below which the chunks are never
	// rewritten (a field so tests can lower it).
	compactMin int
	// budget is the slot's body budget (Config.MaxBodyBytes; 0: none):
	// dead bytes above it are rewritten away too, so a replay that settles
	// many messages keeps its chunks near the budget.
	budget int
}

func (st *store) init() {
	st.index = make(map[msgid.ID]int32)
	st.target = make(map[string]uint32)
	st.due.st = st
	st.open = -1
	st.compactMin = defaultCompactMin
}

// reserve makes room for n more entries and bodies bytes of body, so a
// load grows nothing step by step.
func (st *store) reserve(n, bodies int) {
	if free := cap(st.entries) - len(st.entries); free < n {
		st.entries = append(make([]entry, 0, len(st.entries)+n), st.entries...)
	}
	if len(st.index) == 0 && n > 0 {
		st.index = make(map[msgid.ID]int32, n)
	}
	if free := cap(st.due.pos) - len(st.due.pos); free < n {
		st.due.pos = append(make([]int32, 0, len(st.due.pos)+n), st.due.pos...)
	}
	if bodies > 0 {
		// One chunk for the lot, bounded so one huge slot does not ask for
		// a single giant allocation.
		st.chunks = append(st.chunks, make([]byte, 0, min(bodies, 64*chunkSize)))
		st.open = len(st.chunks) - 1
	}
}

func (st *store) lookup(id msgid.ID) (int32, bool) {
	i, ok := st.index[id]
	return i, ok
}

// add stores a Scheduled event as a pending entry and returns its
// position; without resident, only the body's size and the sequence of
// the record holding it, seq, are kept (cold).
func (st *store) add(ev journal.Event, resident bool, seq uint64) int32 {
	t, ok := st.target[ev.Target]
	if !ok {
		t = uint32(len(st.targets))
		st.targets = append(st.targets, ev.Target)
		st.target[ev.Target] = t
	}
	e := entry{id: ev.ID, deliverAt: ev.DeliverAt, target: t, state: Pending}
	if ev.Header != nil {
		st.headers = append(st.headers, ev.Header)
		e.header = uint32(len(st.headers))
	}
	if resident || len(ev.Body) == 0 {
		e.chunk, e.off, e.n = st.keep(ev.Body)
		st.live += int(e.n)
	} else {
		e.n, e.cold = uint32(len(ev.Body)), true
		e.setRecord(seq)
		st.cold += int(e.n)
	}
	i := int32(len(st.entries))
	st.entries = append(st.entries, e)
	st.index[ev.ID] = i
	return i
}

// keep copies body into the chunks.
func (st *store) keep(body []byte) (chunk, off, n uint32) {
	if len(body) == 0 {
		return 0, 0, 0
	}
	if len(body) > ownChunk {
		st.chunks = append(st.chunks, append([]byte(nil), body...))
		return uint32(len(st.chunks) - 1), 0, uint32(len(body))
	}
	if st.open < 0 || cap(st.chunks[st.open])-len(st.chunks[st.open]) < len(body) {
		size := firstChunk
		if st.open >= 0 {
			size = min(max(2*cap(st.chunks[st.open]), firstChunk), chunkSize)
		}
		st.chunks = append(st.chunks, make([]byte, 0, max(size, len(body))))
		st.open = len(st.chunks) - 1
	}
	c := st.chunks[st.open]
	off = uint32(len(c))
	st.chunks[st.open] = append(c, body...)
	return uint32(st.open), off, uint32(len(body))
}

func (st *store) body(e *entry) []byte {
	if e.n == 0 {
		return nil
	}
	return st.chunks[e.chunk][e.off : e.off+e.n : e.off+e.n]
}

func (st *store) header(e *entry) journal.Header {
	if e.header == 0 {
		return nil
	}
	return st.headers[e.header-1]
}

func (st *store) record(e *entry) Record {
	return Record{ID: e.id, Target: st.targets[e.target], DeliverAt: e.deliverAt, State: e.state, DoneAt: e.doneAt}
}

// drop forgets a settled entry's body and header. The body's bytes stay
// in their chunk until compact rewrites the chunks.
func (st *store) drop(e *entry) {
	if e.header != 0 {
		st.headers[e.header-1] = nil
		e.header = 0
	}
	if e.cold {
		st.cold -= int(e.n)
	} else {
		st.live -= int(e.n)
		st.dead += int(e.n)
	}
	e.chunk, e.off, e.n, e.cold = 0, 0, 0, false
}

// warm brings a cold entry's body into the chunks.
func (st *store) warm(e *entry, body []byte) {
	st.cold -= int(e.n)
	e.chunk, e.off, e.n = st.keep(body)
	e.cold = false
	st.live += int(e.n)
}

// compact rewrites the chunks with the live bodies only, once the dead
// bytes are both large and most of the chunks: the copy costs at most a
// quarter of what it frees, so it is cheap when it happens.
func (st *store) compact() {
	overBudget := st.budget > 0 && st.dead > st.budget
	if !overBudget && (st.dead < st.compactMin || st.dead < 4*st.live) {
		return
	}
	st.rewrite()
}

// rewrite copies the live bodies to fresh chunks, dropping the dead ones.
func (st *store) rewrite() {
	old := st.chunks
	st.chunks, st.open, st.live, st.dead = nil, -1, 0, 0
	for i := range st.entries {
		e := &st.entries[i]
		if e.n == 0 || e.cold {
			continue
		}
		body := old[e.chunk][e.off : e.off+e.n]
		e.chunk, e.off, e.n = st.keep(body)
		st.live += int(e.n)
	}
	// Headers of settled entries are nil already; drop the slots too.
	live := st.headers[:0]
	for i := range st.entries {
		e := &st.entries[i]
		if e.header != 0 {
			live = append(live, st.headers[e.header-1])
			e.header = uint32(len(live))
		}
	}
	clear(st.headers[len(live):])
	st.headers = live
}

// dueHeap orders positions by deliver time, then acceptance stamp, then
// the id's random part: exactly id order, and a total one even for ids
// that share a stamp (which tock never mints, but a journal may hold). It
// is hand-rolled on int32 so that neither the heap nor its operations
// allocate or hold pointers.
type dueHeap struct {
	st    *store
	pos   []int32
	dirty bool // appended to without ordering (recovery); fix before use
}

func (h *dueHeap) less(a, b int32) bool {
	ea, eb := &h.st.entries[a], &h.st.entries[b]
	if ea.deliverAt != eb.deliverAt {
		return ea.deliverAt < eb.deliverAt
	}
	if sa, sb := ea.id.Stamp(), eb.id.Stamp(); sa != sb {
		return sa < sb
	}
	return ea.id.Random() < eb.id.Random()
}

// append adds i without ordering: n appends and one fix cost O(n), not
// O(n log n) as n pushes would.
func (h *dueHeap) append(i int32) {
	h.pos = append(h.pos, i)
	h.dirty = true
}

func (h *dueHeap) push(i int32) {
	if h.dirty {
		h.pos = append(h.pos, i)
		return
	}
	h.pos = append(h.pos, i)
	h.up(len(h.pos) - 1)
}

func (h *dueHeap) fix() {
	if !h.dirty {
		return
	}
	h.dirty = false
	for i := len(h.pos)/2 - 1; i >= 0; i-- {
		h.down(i)
	}
}

// peek returns the first position, or -1.
func (h *dueHeap) peek() int32 {
	h.fix()
	if len(h.pos) == 0 {
		return -1
	}
	return h.pos[0]
}

func (h *dueHeap) pop() {
	h.fix()
	n := len(h.pos) - 1
	h.pos[0] = h.pos[n]
	h.pos = h.pos[:n]
	if n > 0 {
		h.down(0)
	}
}

func (h *dueHeap) up(j int) {
	for j > 0 {
		i := (j - 1) / 2
		if !h.less(h.pos[j], h.pos[i]) {
			break
		}
		h.pos[i], h.pos[j] = h.pos[j], h.pos[i]
		j = i
	}
}

func (h *dueHeap) down(i int) {
	n := len(h.pos)
	for {
		j := 2*i + 1
		if j >= n {
			return
		}
		if r := j + 1; r < n && h.less(h.pos[r], h.pos[j]) {
			j = r
		}
		if !h.less(h.pos[j], h.pos[i]) {
			return
		}
		h.pos[i], h.pos[j] = h.pos[j], h.pos[i]
		i = j
	}
}
