package daemon

import (
	"context"
	"log/slog"

	"github.com/tether-net/tether/internal/config"
	"github.com/tether-net/tether/internal/firewall"
)

// watchFirewall starts the nftables watcher of the firewall (self-healing
// and coexistence, docs/firewall.md) once the engine's first Sync ran. The
// returned stop ends the watcher and waits until it removed the accept
// rules it inserted into other tables. Without the nftables backend
// (iptables=false) there is nothing to watch. also are Tether's other
// tables (the VXLAN filter), restored after the same events.
func watchFirewall(ctx context.Context, fw firewall.Firewall, cfg *config.Config, log *slog.Logger, also ...firewall.Repairer) (stop func(), err error) {
	nft, ok := fw.(*firewall.NFT)
	if !ok {
		return func() {}, nil
	}
	ctx, cancel := context.WithCancel(ctx)
	wait, err := nft.Watch(ctx, firewall.WatchOptions{Log: log, AcceptOtherTables: cfg.ForwardAcceptOtherTables, Also: also})
	if err != nil {
		cancel()
		return nil, err
	}
	return func() { cancel(); wait() }, nil
}
