package main

import (
	"errors"
	"io"
	"net"
	"os"
	"sync"
)

// halfCloser is a connection that can end its sending side alone: a
// *net.TCPConn, a *sal.Conn.
type halfCloser interface {
	net.Conn
	CloseWrite() error
}

// copyBufSize is what one direction of a splice reads at a time: a
// flow's chunk, enough to keep a loopback TCP leg and QUIC busy.
const copyBufSize = 256 << 10

var copyBufs = sync.Pool{New: func() any { b := make([]byte, copyBufSize); return &b }}

// splice joins a and b until both directions are over, and passes a
// half-close through: when one side ends its sending (EOF), the other's
// sending side is ended after the last byte, and the reply may still
// flow back. An error either way (a reset, a lost flow) closes both at
// once, so that the far program sees the failure rather than a hang.
// It returns the bytes a→b, b→a, and the first error.
func splice(a, b halfCloser) (ab, ba int64, err error) {
	var (
		wg    sync.WaitGroup
		once  sync.Once
		first error
	)
	fail := func(e error) {
		once.Do(func() {
			first = e
			a.Close()
			b.Close()
		})
	}
	wg.Go(func() {
		var e error
		if ab, e = pump(b, a); e != nil {
			fail(e)
			return
		}
		b.CloseWrite()
	})
	wg.Go(func() {
		var e error
		if ba, e = pump(a, b); e != nil {
			fail(e)
			return
		}
		a.CloseWrite()
	})
	wg.Wait()
	a.Close()
	b.Close()
	return ab, ba, first
}

// pump copies src to dst until src's EOF (nil) or an error. It copies
// through its own buffer, not io.Copy, whose ReaderFrom and WriterTo
// shortcuts would copy through 32 KiB.
func pump(dst io.Writer, src io.Reader) (int64, error) {
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	var n int64
	for {
		k, rerr := src.Read(buf)
		if k > 0 {
			w, werr := dst.Write(buf[:k])
			n += int64(w)
			if werr != nil {
				return n, werr
			}
		}
		if rerr == io.EOF {
			return n, nil
		}
		if rerr != nil {
			return n, rerr
		}
	}
}

// ordinaryEnd says whether err is only the end of a splice that the
// other side's close cut short, not worth a warning.
func ordinaryEnd(err error) bool {
	return err == nil || errors.Is(err, net.ErrClosed) || errors.Is(err, os.ErrDeadlineExceeded)
}
