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

// openForms lists what Open accepts, for its error messages.
const openForms = `memory:[name], static:name=ip:port,ip:port;name2=ip:port, ` +
	`registry://host:port[?key=fingerprint], dns://[server:port]/, etcd://host:port[,host:port...]/prefix`

// Open returns the resolver a URL names:
//
//	memory:                      the process's shared in-memory registry
//	memory:NAME                  a named one (Hosts that open the same name meet)
//	static:NAME=IP:PORT,...;...  a fixed table (see ParseStatic)
//	registry://HOST:PORT         the embedded registry (see Registry); add
//	                             ?key=FINGERPRINT to pin the registry's key
//	                             (once; an empty or all-zero one is refused)
//	dns://[SERVER:PORT]/         DNS; an empty server means the system's resolvers
//	etcd://HOST:PORT[,...]/PREFIX etcd, with registrations under PREFIX
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
	switch u.Scheme {
	case "dns":
		return openDNS(u)
	case "registry":
		return openRegistry(ctx, u)
	case "etcd":
		return openEtcd(ctx, u)
	}
	return nil, openError(rawURL, "unknown scheme %q", u.Scheme)
}

// openError explains a bad URL, and lists the forms Open accepts.
func openError(rawURL, format string, args ...any) error {
	return fmt.Errorf("%w: resolver URL %q: %s; accepted forms: %s", ErrInvalid, rawURL, fmt.Sprintf(format, args...), openForms)
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

func openDNS(u *url.URL) (Resolver, error) {
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Opaque != "" {
		return nil, openError(u.String(), "dns takes only a server, as in dns://127.0.0.1:53/")
	}
	var cfg DNSConfig
	if u.Host != "" {
		if u.Port() == "" {
			u.Host += ":53"
		}
		cfg.Servers = []string{u.Host}
	}
	d, err := NewDNS(cfg)
	if err != nil {
		return nil, fmt.Errorf("resolve: open %q: %w", u.String(), err)
	}
	return d, nil
}
