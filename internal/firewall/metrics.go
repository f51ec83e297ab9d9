package firewall

import "github.com/tether-net/tether/internal/metrics"

// countingConn counts the batches sent on a conn
// (tether_firewall_batches_total, tether_firewall_batch_errors_total).
type countingConn struct{ conn }

// countBatches wraps c so each Flush (one netlink batch) is counted; c
// itself with metrics off.
func countBatches(c conn) conn {
	if !metrics.On() {
		return c
	}
	return countingConn{c}
}

func (c countingConn) Flush() error {
	err := c.conn.Flush()
	metrics.FirewallBatches.Inc()
	if err != nil {
		metrics.FirewallBatchErrors.Inc()
	}
	return err
}

// observeRepair counts a repair of Tether's table that rebuilt it
// (tether_firewall_restores_total) or failed (..._restore_errors_total).
func observeRepair(changed bool, err error) {
	if !metrics.On() {
		return
	}
	switch {
	case err != nil:
		metrics.FirewallRestoreErrors.Inc()
	case changed:
		metrics.FirewallRestores.Inc()
	}
}
