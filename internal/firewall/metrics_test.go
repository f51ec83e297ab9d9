package firewall

import (
	"errors"
	"github.com/tether-net/tether/internal/metrics/metricstest"
	"testing"

	"github.com/google/nftables"

	"github.com/tether-net/tether/internal/metrics"
)

func TestBatchesCounted(t *testing.T) {
	fc := newFakeConn()
	c := countBatches(fc)
	b0, e0 := metricstest.Counter(t, metrics.FirewallBatches), metricstest.Counter(t, metrics.FirewallBatchErrors)
	c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "t"})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	fc.failFlushes = 1
	c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "u"})
	if err := c.Flush(); err == nil {
		t.Fatal("the injected failure did not fail the batch")
	}
	if got := metricstest.Counter(t, metrics.FirewallBatches) - b0; got != 2 {
		t.Errorf("batches: %v, want 2", got)
	}
	if got := metricstest.Counter(t, metrics.FirewallBatchErrors) - e0; got != 1 {
		t.Errorf("batch errors: %v, want 1", got)
	}
	metrics.SetOn(false)
	defer metrics.SetOn(true)
	if _, wrapped := countBatches(fc).(countingConn); wrapped {
		t.Error("metrics off: the conn is still wrapped")
	}
}

func TestRepairsCounted(t *testing.T) {
	for _, tc := range []struct {
		changed       bool
		err           error
		restores, bad float64
	}{
		{false, nil, 0, 0},
		{true, nil, 1, 0},
		{true, errors.New("EPERM"), 0, 1},
	} {
		r0, e0 := metricstest.Counter(t, metrics.FirewallRestores), metricstest.Counter(t, metrics.FirewallRestoreErrors)
		observeRepair(tc.changed, tc.err)
		if got := metricstest.Counter(t, metrics.FirewallRestores) - r0; got != tc.restores {
			t.Errorf("changed %v err %v: restores %v, want %v", tc.changed, tc.err, got, tc.restores)
		}
		if got := metricstest.Counter(t, metrics.FirewallRestoreErrors) - e0; got != tc.bad {
			t.Errorf("changed %v err %v: restore errors %v, want %v", tc.changed, tc.err, got, tc.bad)
		}
	}
}
