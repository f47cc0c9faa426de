// Package etcd is roam's resolver backend for fleets on many machines, over
// an etcd cluster. It is a module of its own, so that only programs that
// import it link the etcd client and what it brings (gRPC, protobuf, zap).
//
// Importing it, even as _, registers the etcd:// scheme with resolve.Open,
// as a database/sql driver registers itself:
//
//	import _ "github.com/roamnet/roam/resolve/etcd"
//
//	ROAM_RESOLVER=etcd://10.0.0.1:2379,10.0.0.2:2379/roam/
//
// Each registration is a key under a lease kept alive until it is closed,
// so a Host that dies is withdrawn after Config.LeaseTTL; etcd's watch
// pushes changes. It takes only RegisterSigned: records carry a
// resolve.Proof that readers check, and a name is bound to the key of its
// first registration (resolve.ErrNotOwner for any other). Registrations
// outlive a member failure and, re-made when etcd is back, an outage
// longer than their lease.
package etcd

import "github.com/roamnet/roam/resolve"

func init() {
	resolve.RegisterScheme("etcd", "etcd://host:port[,host:port...]/prefix", openEtcd)
}
