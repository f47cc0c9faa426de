package sal

import (
	"sync"
	"time"
)

// deadline is a settable deadline that waiters can select on, in the
// manner of net.Pipe's: wait returns a channel that is closed once the
// deadline passes, and replaced whenever the deadline moves back into the
// future, so a blocked operation sees every SetDeadline promptly.
//
// The zero deadline is ready to use, and makes its channel only when a
// waiter or a deadline needs one, so that a flow nobody waits on holds no
// channel.
type deadline struct {
	mu     sync.Mutex
	timer  *time.Timer
	expire chan struct{} // closed when the deadline passes; nil until needed
}

// set moves the deadline; the zero time means none.
func (d *deadline) set(t time.Time) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil && !d.timer.Stop() {
		<-d.expire // the timer fired: wait until its close is visible
	}
	d.timer = nil
	if d.expire == nil {
		d.expire = make(chan struct{})
	}

	closed := isClosedChan(d.expire)
	if t.IsZero() {
		if closed {
			d.expire = make(chan struct{})
		}
		return
	}
	if dur := time.Until(t); dur > 0 {
		if closed {
			d.expire = make(chan struct{})
		}
		expire := d.expire
		d.timer = time.AfterFunc(dur, func() { close(expire) })
		return
	}
	if !closed {
		close(d.expire)
	}
}

// stop drops a pending timer, so that a flow that is over holds none:
// a deadline a minute away would keep its timer, and what it closes over,
// for that minute. Nobody may wait on the deadline afterwards.
func (d *deadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.timer != nil {
		d.timer.Stop()
		d.timer = nil
	}
}

// wait returns a channel that is closed when the deadline passes.
func (d *deadline) wait() <-chan struct{} {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.expire == nil {
		d.expire = make(chan struct{})
	}
	return d.expire
}

func isClosedChan(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}
