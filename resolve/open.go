package resolve

import (
	"context"
	"fmt"
	"net/url"
	"strings"
	"sync"
)

// EnvResolver names the environment variable that holds the resolver URL a
// sal.Host opens when its Config gives no Resolver.
const EnvResolver = "ROAM_RESOLVER"

// builtinForms lists the URL forms Open always accepts, for its error
// messages; each registered scheme adds its own.
const builtinForms = `memory:[name], static:name=ip:port,ip:port;name2=ip:port`

// Opener makes a Resolver from a URL of the scheme it was registered for.
type Opener func(ctx context.Context, u *url.URL) (Resolver, error)

// schemes holds the backends that registered themselves, as database/sql
// holds its drivers: a program links a backend, and what the backend
// needs, only by importing it.
var schemes struct {
	sync.RWMutex
	open  map[string]Opener
	forms []string
}

// pluginPaths names the packages of the backends this module ships as
// plug-ins, for the error that tells a program which import it lacks.
// Package sal links registry and dns; a program that uses resolve without
// sal imports the ones it wants.
var pluginPaths = map[string]string{
	"dns":      "github.com/roamnet/roam/resolve/dns",
	"etcd":     "github.com/roamnet/roam/resolve/etcd",
	"registry": "github.com/roamnet/roam/resolve/registry",
}

// RegisterScheme makes Open hand URLs of scheme (lower case, as in
// "etcd") to open; form shows the URL's shape in Open's errors. A
// backend's package calls it from init, so that importing the package,
// even as _, is all a program does to use it. It panics if scheme is
// empty, built in or registered already, or open is nil.
func RegisterScheme(scheme, form string, open Opener) {
	switch {
	case scheme == "" || scheme != strings.ToLower(scheme):
		panic("resolve: RegisterScheme: scheme must be lower case and not empty")
	case open == nil:
		panic("resolve: RegisterScheme: nil Opener for " + scheme)
	}
	schemes.Lock()
	defer schemes.Unlock()
	if _, dup := schemes.open[scheme]; dup || scheme == "memory" || scheme == "static" {
		panic("resolve: RegisterScheme: scheme " + scheme + " registered twice")
	}
	if schemes.open == nil {
		schemes.open = make(map[string]Opener)
	}
	schemes.open[scheme] = open
	schemes.forms = append(schemes.forms, form)
}

// BadURL returns the error Open gives for a malformed resolver URL: it
// wraps ErrInvalid, says what is wrong, and lists the forms Open accepts.
// Backends registered with RegisterScheme use it too.
func BadURL(rawURL, reason string) error {
	schemes.RLock()
	forms := builtinForms
	for _, f := range schemes.forms {
		forms += ", " + f
	}
	schemes.RUnlock()
	return fmt.Errorf("%w: resolver URL %q: %s; accepted forms: %s", ErrInvalid, rawURL, reason, forms)
}

// Open returns the resolver a URL names:
//
//	memory:                      the process's shared in-memory registry
//	memory:NAME                  a named one (Hosts that open the same name meet)
//	static:NAME=IP:PORT,...;...  a fixed table (see ParseStatic)
//
// and the schemes of the backends the program links (RegisterScheme):
//
//	registry://HOST:PORT         the embedded registry, package
//	                             github.com/roamnet/roam/resolve/registry; add
//	                             ?key=FINGERPRINT to pin the registry's key
//	                             (once; an empty or all-zero one is refused)
//	dns://[SERVER:PORT]/         DNS, package github.com/roamnet/roam/resolve/dns;
//	                             an empty server means the system's resolvers
//	etcd://HOST:PORT[,...]/PREFIX
//	                             etcd, package github.com/roamnet/roam/resolve/etcd
//
// Package sal links registry and dns, so a program that uses a sal.Host
// has them; one that uses resolve alone imports those it needs, even as _,
// as it would a database/sql driver. A scheme this module ships as a
// plug-in that the program does not link fails with ErrUnsupported, and
// the error names the import that adds it.
//
// The result also implements Registrar, SignedRegistrar and Watcher where
// its backend can; find them by type assertion. Resolvers Open dials hold
// connections: close them with Close when done (an io.Closer check is
// enough; memory and static resolvers need none). A malformed URL or an
// unknown scheme returns an error wrapping ErrInvalid that names the
// accepted forms.
func Open(ctx context.Context, rawURL string) (Resolver, error) {
	scheme, rest, ok := strings.Cut(rawURL, ":")
	if !ok || scheme == "" {
		return nil, openError(rawURL, "no scheme")
	}
	switch strings.ToLower(scheme) {
	case "memory":
		if strings.HasPrefix(rest, "//") || strings.ContainsAny(rest, "/?#") {
			return nil, openError(rawURL, "memory takes only a name, as in memory:lab")
		}
		return sharedMemory(rest), nil
	case "static":
		s, err := ParseStatic(rest)
		if err != nil {
			return nil, fmt.Errorf("resolve: open %q: %w", rawURL, err)
		}
		return s, nil
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, openError(rawURL, "%v", err)
	}
	if u.User != nil || u.Fragment != "" {
		return nil, openError(rawURL, "user info and fragments are not allowed")
	}
	schemes.RLock()
	open := schemes.open[u.Scheme]
	schemes.RUnlock()
	if open != nil {
		return open(ctx, u)
	}
	if path, ok := pluginPaths[u.Scheme]; ok {
		return nil, fmt.Errorf("%w: resolver URL %q: the %s backend is not linked into this program; add import _ %q",
			ErrUnsupported, rawURL, u.Scheme, path)
	}
	return nil, openError(rawURL, "unknown scheme %q", u.Scheme)
}

// openError is BadURL with a format.
func openError(rawURL, format string, args ...any) error {
	return BadURL(rawURL, fmt.Sprintf(format, args...))
}

var memories struct {
	sync.Mutex
	m map[string]*Memory
}

// SharedMemory is a process-wide Memory that Open hands out by name. Its
// Close does nothing, because other users in the process still hold it.
type SharedMemory struct{ *Memory }

// Close does nothing: a shared registry lives as long as the process.
func (SharedMemory) Close() error { return nil }

// sharedMemory returns the process-wide Memory of that name, so that Hosts
// configured with the same URL (as through ROAM_RESOLVER) find each other.
func sharedMemory(name string) SharedMemory {
	memories.Lock()
	defer memories.Unlock()
	if memories.m == nil {
		memories.m = make(map[string]*Memory)
	}
	m := memories.m[name]
	if m == nil {
		m = NewMemory()
		memories.m[name] = m
	}
	return SharedMemory{m}
}
