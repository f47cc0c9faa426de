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
	defer h.wg.Done()
	for ch := range m.Subscribe(h.ctx) {
		current := h.LocalAddr().Addr()
		lost := slices.Contains(ch.Removed, current)
		if !ch.Preferred.IsValid() || ch.Preferred == current || !ch.PreferredChanged && !lost {
			continue
		}
		to := netip.AddrPortFrom(ch.Preferred, 0)
		ctx, cancel := context.WithTimeout(h.ctx, 4*h.cfg.endpointTimeout())
		err := h.Rebind(ctx, to.String())
		cancel()
		if err != nil {
			h.log.Warn("rebind after address change failed", "from", current, "to", to, "err", err)
		}
	}
}
