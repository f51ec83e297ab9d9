package engine

import (
	"errors"
	"strings"
	"testing"
)

// The gateway leg of an overlay attach runs beside the overlay's own join:
// interface names stay apart, the record lists the overlay first, and an
// overlay attach that fails after the gateway leg was made takes it back.
func TestWayOutBesideOverlayAttach(t *testing.T) {
	for _, tc := range []struct {
		name  string
		point string // a fault point (both legs stop there), or
		join  bool   // the overlay driver's join fails (the gateway leg stands until taken back)
	}{{name: "ok"}, {name: "overlay join fails", join: true}, {name: "after-join", point: "attach.after-join"},
		{name: "after-publish", point: "attach.after-publish"}} {
		point := tc.point
		t.Run(tc.name, func(t *testing.T) {
			r := newRig(t, withCluster())
			ov := r.network("ov", "overlay", "10.21.0.0/24")
			r.network("ovi", "overlay", "10.22.0.0/24", func(s *NetworkSpec) { s.Internal = true })
			r.sandbox("web", "ovi") // eth0, no way out and no default route
			if r.drv["bridge"].Endpoints() != nil && len(r.drv["bridge"].Endpoints()) != 0 {
				t.Fatal("a bridge endpoint before the test")
			}
			if point != "" {
				arm(t, point)
			}
			if tc.join {
				r.driverOf("ov").FailNext("Join", errors.New("no such device"))
			}
			err := r.e.Connect(r.ctx, "ov", "web", AttachSpec{})
			disarm()
			sb := r.getSandbox("web")
			if tc.name == "ok" {
				if err != nil {
					t.Fatal(err)
				}
				if len(sb.Endpoints) != 3 || sb.Endpoints[1].NetworkID != ov.ID || sb.Endpoints[1].IfName != "eth1" ||
					r.e.NetworkName(sb.Endpoints[2].NetworkID) != GatewayBridgeName || sb.Endpoints[2].IfName != "eth2" {
					t.Fatalf("endpoints %+v: want ovi's eth0, the overlay's eth1, then the gateway network's eth2", sb.Endpoints)
				}
				return
			}
			var fe *faultError
			if point != "" && !errors.As(err, &fe) || tc.join && (err == nil || !strings.Contains(err.Error(), "no such device")) {
				t.Fatalf("attach: %v, want the injected failure", err)
			}
			for _, ep := range sb.Endpoints[1:] {
				t.Errorf("endpoint %s on %s after a failed overlay attach, want only ovi's (the gateway leg taken back)", ep.IfName, r.e.NetworkName(ep.NetworkID))
			}
			if rec, _ := r.stored(sb.ID); rec == nil || len(rec.Endpoints) != 1 {
				t.Errorf("stored record %+v, want ovi's endpoint only", rec)
			}
			for id := range r.drv["bridge"].Endpoints() {
				t.Errorf("the bridge driver (the gateway network's) still holds endpoint %.12s", id)
			}
			// The sandbox attaches again, with the same interface names.
			if err := r.e.Connect(r.ctx, "ov", "web", AttachSpec{}); err != nil {
				t.Fatal("attach after the rollback:", err)
			}
			if sb := r.getSandbox("web"); len(sb.Endpoints) != 3 || sb.Endpoints[1].IfName != "eth1" || sb.Endpoints[2].IfName != "eth2" {
				t.Errorf("endpoints %+v after attaching again", sb.Endpoints)
			}
		})
	}
}
