package firewall

import (
	"errors"
	"testing"

	"github.com/google/nftables"
	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"

	"github.com/tether-net/tether/internal/metrics"
)

func counterValue(t *testing.T, c prometheus.Counter) float64 {
	t.Helper()
	var m dto.Metric
	if err := c.Write(&m); err != nil {
		t.Fatal(err)
	}
	return m.GetCounter().GetValue()
}

func TestBatchesCounted(t *testing.T) {
	fc := newFakeConn()
	c := countBatches(fc)
	b0, e0 := counterValue(t, metrics.FirewallBatches), counterValue(t, metrics.FirewallBatchErrors)
	c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "t"})
	if err := c.Flush(); err != nil {
		t.Fatal(err)
	}
	fc.failFlushes = 1
	c.AddTable(&nftables.Table{Family: nftables.TableFamilyIPv4, Name: "u"})
	if err := c.Flush(); err == nil {
		t.Fatal("the injected failure did not fail the batch")
	}
	if got := counterValue(t, metrics.FirewallBatches) - b0; got != 2 {
		t.Errorf("batches: %v, want 2", got)
	}
	if got := counterValue(t, metrics.FirewallBatchErrors) - e0; got != 1 {
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
		r0, e0 := counterValue(t, metrics.FirewallRestores), counterValue(t, metrics.FirewallRestoreErrors)
		observeRepair(tc.changed, tc.err)
		if got := counterValue(t, metrics.FirewallRestores) - r0; got != tc.restores {
			t.Errorf("changed %v err %v: restores %v, want %v", tc.changed, tc.err, got, tc.restores)
		}
		if got := counterValue(t, metrics.FirewallRestoreErrors) - e0; got != tc.bad {
			t.Errorf("changed %v err %v: restore errors %v, want %v", tc.changed, tc.err, got, tc.bad)
		}
	}
}
