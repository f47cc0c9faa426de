package netns

import (
	"fmt"
	"os"
	"path/filepath"
	"runtime"

	"golang.org/x/sys/unix"
)

// Do runs fn on an OS thread that has entered the namespace. Sockets that
// fn opens stay in the namespace for their lifetime and may be used from
// any goroutine afterwards. A panic in fn is re-raised in the caller, so
// that tests clean up.
func (ns *Namespace) Do(fn func() error) error {
	type result struct {
		err   error
		panic any
	}
	done := make(chan result, 1)
	go func() {
		// The thread stays locked unless it returns to its own namespace;
		// a locked thread ends with its goroutine, so no other goroutine
		// ever runs in the wrong namespace.
		runtime.LockOSThread()
		var res result
		defer func() { done <- res }()
		back, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			res.err = err
			return
		}
		defer back.Close()
		target, err := os.Open(filepath.Join("/var/run/netns", ns.Name))
		if err != nil {
			res.err = err
			return
		}
		err = unix.Setns(int(target.Fd()), unix.CLONE_NEWNET)
		target.Close()
		if err != nil {
			res.err = fmt.Errorf("netns: entering %s: %w", ns.Name, err)
			return
		}
		func() {
			defer func() { res.panic = recover() }()
			res.err = fn()
		}()
		if unix.Setns(int(back.Fd()), unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		}
	}()
	res := <-done
	if res.panic != nil {
		panic(res.panic)
	}
	return res.err
}
