// Package emu emulates the network paths of moving devices: delay,
// jitter, loss, bursty loss, a rate-limited bottleneck with its queue,
// blackouts, and the address changes of handovers and moving servers. The
// kernel's netem is not needed: everything happens in userspace.
//
// # Two forms, one model
//
// Network is an in-memory network of net.PacketConns (*PacketConn) for
// tests. It runs on the time package's timers, so inside a
// testing/synctest bubble it runs in virtual time: a 30 s blackout takes
// microseconds, and delays are exact to the nanosecond. quic-go runs over
// it unchanged, and Network.ListenPacket has the signature of
// sal.Config.ListenPacket.
//
// Relay is a UDP relay on loopback for benchmarks and tests that cross
// processes. Unshaped, it forwards well over 1 Gbit/s (BenchmarkRelay
// states its own figures); shaped, its delays are within a fraction of a
// millisecond.
//
// Both put a path between clients and a server. A path has two
// directions, Up (client to server) and Down, each a Link: a model that,
// given its LinkConfig, its seeded random source and the time and size of
// each datagram, decides when the datagram comes out or why it is
// dropped. Datagrams keep their order unless LinkConfig.Reorder asks
// otherwise.
//
//	client ──Up link──▶ NAT mapping ──▶ server
//	client ◀─Down link── ServerAddr ◀── server
//
// Clients send to the path's ServerAddr; the server sees each client at a
// mapping. Path and Relay share these controls, and both implement
// trace.Target, so trace.Play drives either with a trace file:
//
//	Configure(dir, cfg)  one direction's link
//	SetLink(l)           both, from a trace's path-wide figures
//	Blackout(d)          drop everything for d (a tunnel), in flight too
//	Handover(outage)     drop everything for outage; each client's next
//	                     datagram gets a new mapping on a new address
//	Rebind()             new mappings on new ports (NAT rebinding)
//	MoveServer()         a new ServerAddr; the old one drops everything
//	SetHook(h)           see every datagram first; drop or delay it
//
// MultiPath gives one client several independent paths to one server's
// address, one per local address of the client (a modem per carrier),
// routed by source address as policy routing does. Each path is a Path,
// with its own links, mappings and trace; MultiPath.Play plays a trace on
// each at once, and MultiPath.Blackout cuts them all (a tunnel).
//
// DeadAddrs is a ready hook for a device whose old address goes away at a
// handover: it drops what the old address still sends, and what is sent
// to its old mapping.
//
// # Observing
//
// PathConfig.OnEvent receives an Event for each datagram forwarded or
// dropped (with its DropReason) and for each change of link, mapping or
// address. Link.Stats counts the same. For one seed, the same datagrams
// offered in the same order give the same events. Inside a synctest
// bubble, goroutines that act at the same virtual instant still run in
// any order, so a test that wants identical runs keeps its senders and
// its scheduled events off each other's instants.
//
// # Errors
//
// A closed PacketConn returns errors wrapping net.ErrClosed; a passed
// deadline, errors wrapping os.ErrDeadlineExceeded whose Timeout is true;
// binding a taken address, errors wrapping syscall.EADDRINUSE; these are
// *net.OpError, as from package net. A closed Network's Listen and
// NewPath return errors wrapping ErrNetworkClosed.
package emu
