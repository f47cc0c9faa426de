package emu

import (
	"net/netip"
	"sync"
)

// DeadAddrs makes addresses go away, as a moving device's old address
// does at a handover, where Handover alone leaves the client's old socket
// able to send. Its Hook drops what a dead address sends and what is sent
// to one (a dead client's mapping). Datagrams already in a link still
// arrive, as those already in the air would.
//
// The zero value has no dead address. A DeadAddrs is safe for concurrent
// use and must not be copied after first use.
type DeadAddrs struct{ m sync.Map }

// Kill makes each valid address of addrs dead for good; invalid ones are
// ignored. At a handover these are typically the client's old address
// and its mapping, from Path.Mapping or Relay.Mapping, which is invalid
// if the client has none.
func (d *DeadAddrs) Kill(addrs ...netip.AddrPort) {
	for _, a := range addrs {
		if a.IsValid() {
			d.m.Store(unmap(a), true)
		}
	}
}

// Hook is a Hook, for PathConfig.Hook or SetHook: it drops a datagram
// going Up from a dead address, or Down to one.
func (d *DeadAddrs) Hook(p Packet) Verdict {
	a := p.From
	if p.Dir == Down {
		a = p.To
	}
	_, dead := d.m.Load(a)
	return Verdict{Drop: dead}
}
