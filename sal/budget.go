package sal

import "sync"

// budget bounds the memory all of a Host's flows keep for replay
// (Config.HostBuffer), counted in whole chunks, so that a peer with many
// flows of one unacknowledged byte each is charged for what they really
// hold. It is shared fairly between the Host's connections: each takes
// from its own share, which holds at most connLimit, and once half the
// budget is in use a connection may grow only up to an equal part of the
// other half (limit / (2 × connections holding memory)). So one peer that
// stops acknowledging can fill its share and no more, and an honest
// connection always finds room for its fair part: the others together
// hold at most limit/2 from before the pressure plus their own fair parts.
//
// Writers take before buffering and give back what the peer acknowledged;
// a writer refused waits on the channel take returns.
type budget struct {
	mu        sync.Mutex
	limit     int
	connLimit int
	used      int
	active    int           // shares holding memory
	waiting   chan struct{} // closed and replaced when memory is given back
}

// A share is one connection's part of the budget. Its fields are guarded
// by the budget's mu.
type share struct {
	used int
	// waiting, when not nil, is closed when the share gives memory back:
	// writers refused for the share's own limit wait on it rather than on
	// the budget's channel, so that a peer with thousands of blocked flows
	// does not wake them all each time any other flow is acknowledged.
	waiting chan struct{}
}

func newBudget(limit, connLimit int) *budget {
	return &budget{limit: limit, connLimit: min(connLimit, limit), waiting: make(chan struct{})}
}

// take takes up to n bytes, in whole chunks, for s and returns how many it
// took, and a channel that is closed when more room may be available.
func (b *budget) take(s *share, n int) (int, <-chan struct{}) {
	b.mu.Lock()
	defer b.mu.Unlock()
	grant := min(n, b.limit-b.used, b.connLimit-s.used)
	if b.used >= b.limit/2 {
		active := b.active
		if s.used == 0 {
			active++
		}
		grant = min(grant, b.limit/(2*active)-s.used)
	}
	grant -= grant % minChunk
	if grant <= 0 {
		if s.used+minChunk > b.connLimit {
			if s.waiting == nil {
				s.waiting = make(chan struct{})
			}
			return 0, s.waiting
		}
		return 0, b.waiting
	}
	if s.used == 0 {
		b.active++
	}
	s.used += grant
	b.used += grant
	return grant, b.waiting
}

// give gives back n bytes s took.
func (b *budget) give(s *share, n int) {
	if n == 0 {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.release(s, n)
	close(b.waiting)
	b.waiting = make(chan struct{})
}

func (b *budget) release(s *share, n int) {
	s.used -= n
	b.used -= n
	if s.used == 0 {
		b.active--
	}
	if s.waiting != nil {
		close(s.waiting)
		s.waiting = nil
	}
}

// move charges n bytes taken by from to to instead, as when a flow resumes
// on another connection. The new share may go over its limit for a while;
// it takes no more until it is back under.
func (b *budget) move(from, to *share, n int) {
	if n == 0 || from == to {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.release(from, n)
	if to.used == 0 {
		b.active++
	}
	to.used += n
	b.used += n
}

func (b *budget) inUse() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.used
}
