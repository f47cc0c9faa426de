package main

import (
	"context"
	"crypto"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/roamnet/roam/mobility"
	"github.com/roamnet/roam/resolve"
	"github.com/roamnet/roam/sal"
)

// hostFlags are the flags of every command that runs a Host.
type hostFlags struct {
	resolver string
	key      string
	udp      string
	monitor  bool
	paths    multiFlag
	verbose  bool
}

func (hf *hostFlags) register(set *flag.FlagSet) {
	set.StringVar(&hf.resolver, "resolver", "", "resolver `URL` (default: $"+resolve.EnvResolver+")")
	set.StringVar(&hf.key, "key", "", "PEM `file` of the Host's identity, made on first use (default: "+defaultKeyPathText()+")")
	set.StringVar(&hf.udp, "udp", "", "local UDP `address` of the Host (default: any address, a free port)")
	set.BoolVar(&hf.monitor, "monitor", false, "follow the machine's addresses: move to the preferred one, and use every usable one as a path")
	set.Var(&hf.paths, "path", "a further local `address` to use as a path (repeat for more)")
	set.BoolVar(&hf.verbose, "v", false, "log at debug level")
}

// multiFlag is a flag that may be given more than once.
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// defaultKeyPath is where a Host's key lives when -key is not given.
func defaultKeyPath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("no -key given and no config directory for the default key: %w", err)
	}
	return filepath.Join(dir, "roam", "key.pem"), nil
}

func defaultKeyPathText() string {
	if p, err := defaultKeyPath(); err == nil {
		return p
	}
	return "$XDG_CONFIG_HOME/roam/key.pem"
}

// keyPath is path, or the default key file (its directory made, for the
// owner alone) when path is empty.
func keyPath(path string) (string, error) {
	if path != "" {
		return path, nil
	}
	p, err := defaultKeyPath()
	if err != nil {
		return "", err
	}
	return p, os.MkdirAll(filepath.Dir(p), 0o700)
}

// loadKey loads (or makes) the key the flags name.
func (hf *hostFlags) loadKey() (string, crypto.Signer, error) {
	path, err := keyPath(hf.key)
	if err != nil {
		return "", nil, err
	}
	key, err := sal.LoadKey(path)
	return path, key, err
}

// openResolver opens the resolver the flags or the environment name.
func (hf *hostFlags) openResolver(ctx context.Context) (resolve.Resolver, error) {
	url := hf.resolver
	if url == "" {
		url = os.Getenv(resolve.EnvResolver)
	}
	if url == "" {
		return nil, usagef("no resolver: pass -resolver URL or set %s (roam registry prints one)", resolve.EnvResolver)
	}
	return resolve.Open(ctx, url)
}

// logger logs to w at info level, or debug with -v; quiet commands (dial)
// log only warnings unless asked.
func (hf *hostFlags) logger(w io.Writer, quiet bool) *slog.Logger {
	level := slog.LevelInfo
	if quiet {
		level = slog.LevelWarn
	}
	if hf.verbose {
		level = slog.LevelDebug
	}
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// session is a command's Host and what it took to make it, closed in
// reverse order.
type session struct {
	host    *sal.Host
	log     *slog.Logger
	status  *status
	keyPath string
	closers []func()
}

func (s *session) Close() {
	for i := len(s.closers) - 1; i >= 0; i-- {
		s.closers[i]()
	}
}

// newSession makes the Host the flags describe. watched says a person may
// watch stderr: then a status line is kept there when it is a terminal.
func (c *cli) newSession(ctx context.Context, hf *hostFlags, watched bool) (_ *session, err error) {
	s := &session{}
	defer func() {
		if err != nil {
			s.Close()
		}
	}()
	var w io.Writer = c.stderr
	if watched && c.terminal {
		s.status = newStatus(c.stderr)
		w = s.status
		s.closers = append(s.closers, s.status.stop)
	}
	s.log = hf.logger(w, !watched)

	path, key, err := hf.loadKey()
	if err != nil {
		return nil, err
	}
	s.keyPath = path
	r, err := hf.openResolver(ctx)
	if err != nil {
		return nil, err
	}
	if cl, ok := r.(io.Closer); ok {
		s.closers = append(s.closers, func() { cl.Close() })
	}
	cfg := sal.Config{
		Resolver:   r,
		Key:        key,
		ListenAddr: hf.udp,
		Paths:      hf.paths,
		Logger:     s.log,
		OnEvent:    s.event,
	}
	if hf.monitor {
		m, err := mobility.NewMonitor(mobility.MonitorConfig{})
		if err != nil {
			return nil, fmt.Errorf("-monitor: %w", err)
		}
		s.closers = append(s.closers, func() { m.Close() })
		cfg.Monitor = m
	}
	h, err := sal.NewHost(cfg)
	if err != nil {
		return nil, err
	}
	s.host = h
	s.closers = append(s.closers, func() {
		drain(h, drainTimeout)
		h.Close()
	})
	if s.status != nil {
		s.status.start(h)
	}
	if c.hostMade != nil {
		c.hostMade(h)
	}
	return s, nil
}

// event logs what a person running the command wants to know of a move,
// and keeps the last one for the status line.
func (s *session) event(e sal.Event) {
	if s.status != nil {
		s.status.event(e)
	}
	if s.log == nil {
		return
	}
	switch e.Kind {
	case sal.EventResumed:
		s.log.Info("flow resumed", "service", e.Service, "flow", e.FlowID, "stall", e.Stall, "replayed", e.Replayed, "to", e.To)
	case sal.EventMigrated:
		s.log.Info("connection migrated", "from", e.From, "to", e.To, "rtt", e.RTT)
	case sal.EventRebound:
		s.log.Info("host moved", "from", e.From, "to", e.To)
	case sal.EventLost:
		s.log.Warn("flow lost", "service", e.Service, "flow", e.FlowID, "err", e.Err)
	case sal.EventPathDown, sal.EventPathUp, sal.EventReplaced:
		s.log.Info(e.Kind.String(), "local", e.From, "peer", e.To, "err", e.Err)
	default:
		s.log.Debug(e.Kind.String(), "service", e.Service, "flow", e.FlowID, "err", e.Err)
	}
}

// parseService parses a service ID argument, as a usage error if bad.
func parseService(arg string) (sal.ServiceID, error) {
	id, err := sal.ParseServiceID(arg)
	if err != nil {
		var ie *sal.ServiceIDError
		if errors.As(err, &ie) {
			return id, usagef("%v", err)
		}
		return id, usagef("service %q: %v", arg, err)
	}
	return id, nil
}

// drainTimeout bounds how long a command that stops waits for its closed
// flows to finish: the peer's acknowledgement of the last bytes and the
// FIN, about a round trip, after which Host.Close would cut them off.
const drainTimeout = 2 * time.Second

// drain waits until no flow of h is open, or for at most d.
func drain(h *sal.Host, d time.Duration) {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		var open int64
		for _, st := range h.ServiceStats() {
			open += st.FlowsOpen
		}
		if open == 0 {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
}
