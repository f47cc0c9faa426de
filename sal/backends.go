package sal

// The resolver backends a Host opens by URL. A Host given no Resolver opens
// the URL in $ROAM_RESOLVER (resolve.Open), and registry:// and dns:// are
// backends in packages of their own, which register their scheme when
// linked, as database/sql drivers do. sal links both, so that every
// program built on sal takes ROAM_RESOLVER=registry://... or dns://...
// with no code change; a program that uses resolve without sal imports
// the ones it needs. etcd:// (resolve/etcd, a module of its own) is not
// linked here: it brings gRPC and protobuf.
import (
	_ "github.com/roamnet/roam/resolve/dns"
	_ "github.com/roamnet/roam/resolve/registry"
)
