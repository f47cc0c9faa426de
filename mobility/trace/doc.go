// Package trace reads, writes, generates and plays mobility traces: timed
// events that change a network path, such as a train crossing cells and
// tunnels.
//
// A trace is text, one event a line:
//
//	# a comment, up to the end of the line; blank lines are ignored
//	0.000  link rtt_ms=60 jitter_ms=8 loss=0.005 rate_mbps=20
//	14.483 handover outage_ms=120
//	60.000 blackout duration_ms=8000   # a tunnel
//	95.000 server_move
//	120.000 end
//
// The first word is the time in seconds from the start (a decimal, never
// earlier than the line before), the second the event, then key=value
// fields:
//
//	link         any non-empty subset of the keys below; fields not given keep their value
//	  rtt_ms       round-trip time, split evenly between the two directions
//	  jitter_ms    spread of the RTT: each one-way delay varies within ±jitter_ms/2
//	  loss         independent random loss per direction, 0 to 1
//	  rate_mbps    bottleneck rate per direction in Mbit/s; 0 means unlimited
//	  queue_bytes  drop-tail queue in front of the bottleneck (extension)
//	  burst_enter  Gilbert–Elliott bursty loss: chance per datagram to enter a burst (extension)
//	  burst_exit   chance per datagram to leave a burst; 0 means 1 (extension)
//	  burst_loss   loss inside a burst; 0 means 1 (extension)
//	  reorder      chance that a datagram skips the delay, as netem's reorder (extension)
//	handover     outage_ms (default 0): everything is dropped for the outage,
//	             then the server sees the client at a new source address
//	blackout     duration_ms (required): everything is dropped; addresses stay
//	server_move  the server's address changes; the old one drops everything
//	end          the scenario ends; nothing may follow
//
// This is the format of roam's reference trace (shared/traces/README.md)
// plus the extensions marked above; every reader of that format's minimum
// reads the reference trace, and so does this one. Values are read exactly
// (0.3 s is 300 ms, not 299.999999 ms); times and durations may not
// exceed a million seconds.
//
// Parse reports a malformed line as a *ParseError that gives the line,
// the column and what was expected; it wraps ErrSyntax:
//
//	trace: line 3, column 17: unknown key "rtt" for link (want rtt_ms, jitter_ms, ...)
//
// Profile returns the shipped profiles, "hsr-300" (high-speed rail, with
// the published measurements behind its figures cited in its header) and
// "wired". Generate draws further traces from a Model whose zero value is
// the hsr-300 model; the same model and seed give the same trace.
//
// A device with a modem per carrier has a trace per carrier.
// MultiProfile returns the shipped "hsr-300-dual": two carriers with
// hsr-300's cells, handing over at different places, and tunnels that cut
// both. GenerateMulti draws more from a MultiModel; emu.MultiPath.Play
// plays them, one per path.
//
// Play drives a Target with a trace in real time, or in virtual time
// inside a testing/synctest bubble. Both forms of the emulator in
// mobility/emu are Targets:
//
//	tr, _ := trace.Profile("hsr-300")
//	err := trace.Play(ctx, tr, path)
package trace
