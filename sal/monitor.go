package sal

import (
	"context"
	"net/netip"
	"slices"

	"github.com/roamnet/roam/mobility"
)

// followAddresses rebinds the Host whenever the Monitor's policy prefers
// another local address, or the address in use disappears: the wifi went
// away, the phone changed cells, a cable was plugged in.
func (h *Host) followAddresses(m *mobility.Monitor) {
	changes := m.Subscribe(h.ctx)
	h.syncPaths(m) // after Subscribe, so that no change is missed
	for ch := range changes {
		current := h.LocalAddr().Addr()
		lost := slices.Contains(ch.Removed, current)
		if ch.Preferred.IsValid() && ch.Preferred != current && (ch.PreferredChanged || lost) {
			to := netip.AddrPortFrom(ch.Preferred, 0)
			ctx, cancel := context.WithTimeout(h.ctx, 4*h.cfg.endpointTimeout())
			err := h.Rebind(ctx, to.String())
			cancel()
			if err != nil {
				h.log.Warn("rebind after address change failed", "from", current, "to", to, "err", err)
			}
		}
		h.syncPaths(m)
	}
}

// syncPaths makes every address the Monitor allows, but the one the Host
// is bound to, a further path, and removes the paths it added for
// addresses that are gone. Paths added by Config.Paths or AddPath stay.
func (h *Host) syncPaths(m *mobility.Monitor) {
	want := m.Allowed()
	h.mu.Lock()
	if h.closed {
		h.mu.Unlock()
		return
	}
	primary := h.cur.local.Addr()
	var remove []string
	have := make(map[netip.Addr]bool)
	for _, pt := range h.paths {
		a := pt.t.local.Addr()
		if pt.auto && (a == primary || !slices.Contains(want, a)) {
			remove = append(remove, pt.given)
			continue
		}
		have[a] = true
	}
	h.mu.Unlock()
	for _, given := range remove {
		if err := h.RemovePath(given); err != nil {
			h.log.Debug("remove path", "addr", given, "err", err)
		}
	}
	for _, a := range want {
		if a == primary || have[a] {
			continue
		}
		ctx, cancel := context.WithTimeout(h.ctx, h.cfg.endpointTimeout())
		err := h.addPath(ctx, netip.AddrPortFrom(a, 0).String(), true)
		cancel()
		if err != nil {
			h.log.Warn("path for a new address failed", "addr", a, "err", err)
		}
	}
}
