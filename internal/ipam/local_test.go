package ipam

import (
	"bytes"
	"context"
	"errors"
	"net/netip"
	"testing"
)

// The policy over the local bitmap: static, else sticky when usable and
// free, else next-fit; errors change nothing.
func TestSubnetAssign(t *testing.T) {
	// 10.0.0.0/28, range .0-.7: .0 network, .1 gateway, .3 aux; .15 broadcast.
	// Allocatable from the range: .2 .4 .5 .6 .7.
	cfg := SubnetConfig{Subnet: pfx("10.0.0.0/28"), IPRange: pfx("10.0.0.0/29"), Aux: map[string]netip.Addr{"r": ip("10.0.0.3")}}
	rangeAll := []string{"10.0.0.2", "10.0.0.4", "10.0.0.5", "10.0.0.6", "10.0.0.7"}
	tests := []struct {
		name           string
		taken          []string
		static, sticky string
		want           string
		wantErr        error // ErrAddrInUse, ErrNoAddress, or errField
	}{
		{name: "nothing asked: next free", want: "10.0.0.2"},
		{name: "static in range", static: "10.0.0.5", want: "10.0.0.5"},
		{name: "static outside ip-range", static: "10.0.0.12", want: "10.0.0.12"},
		{name: "static beats sticky", static: "10.0.0.5", sticky: "10.0.0.6", want: "10.0.0.5"},
		{name: "static taken", taken: []string{"10.0.0.5"}, static: "10.0.0.5", wantErr: ErrAddrInUse},
		{name: "static taken, sticky free", taken: []string{"10.0.0.5"}, static: "10.0.0.5", sticky: "10.0.0.6", wantErr: ErrAddrInUse},
		{name: "static gateway", static: "10.0.0.1", wantErr: ErrAddrInUse},
		{name: "static aux", static: "10.0.0.3", wantErr: ErrAddrInUse},
		{name: "static outside subnet", static: "10.0.1.5", wantErr: errField},
		{name: "static network address", static: "10.0.0.0", wantErr: errField},
		{name: "static broadcast", static: "10.0.0.15", wantErr: errField},
		{name: "static ipv6", static: "fd00::5", wantErr: errField},
		{name: "static in full range", taken: rangeAll, static: "10.0.0.12", want: "10.0.0.12"},
		{name: "sticky free", sticky: "10.0.0.6", want: "10.0.0.6"},
		{name: "sticky outside ip-range", sticky: "10.0.0.12", want: "10.0.0.12"},
		{name: "sticky taken: next free", taken: []string{"10.0.0.6"}, sticky: "10.0.0.6", want: "10.0.0.2"},
		{name: "sticky gateway: next free", sticky: "10.0.0.1", want: "10.0.0.2"},
		{name: "sticky aux: next free", sticky: "10.0.0.3", want: "10.0.0.2"},
		{name: "sticky broadcast: next free", sticky: "10.0.0.15", want: "10.0.0.2"},
		{name: "sticky outside subnet: next free", sticky: "10.9.9.9", want: "10.0.0.2"},
		{name: "range full", taken: rangeAll, wantErr: ErrNoAddress},
		{name: "range full, sticky taken", taken: rangeAll, sticky: "10.0.0.4", wantErr: ErrNoAddress},
		{name: "range full, sticky free outside it", taken: rangeAll, sticky: "10.0.0.12", want: "10.0.0.12"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustSubnet(t, cfg)
			for _, a := range tt.taken {
				if err := s.Reserve(ip(a)); err != nil {
					t.Fatal(err)
				}
			}
			var r Request
			if tt.static != "" {
				r.Static = ip(tt.static)
			}
			if tt.sticky != "" {
				r.Sticky = ip(tt.sticky)
			}
			before, _ := s.MarshalBinary()
			got, err := s.Assign(r)
			if tt.wantErr != nil {
				after, _ := s.MarshalBinary()
				if !isClass(err, tt.wantErr) || got.IsValid() {
					t.Fatalf("Assign(%+v) = %v, %v; want error %v", r, got, err, tt.wantErr)
				}
				if !bytes.Equal(before, after) {
					t.Errorf("a failed Assign changed the allocator")
				}
				return
			}
			if err != nil || got.String() != tt.want {
				t.Fatalf("Assign(%+v) = %v, %v; want %s", r, got, err, tt.want)
			}
			if !s.InUse(got) {
				t.Errorf("%s not in use after Assign", got)
			}
		})
	}
}

// errField stands for "a *FieldError for the field ip" in tables.
var errField = errors.New("field error")

func isClass(err, class error) bool {
	if class == errField {
		var fe *FieldError
		return errors.As(err, &fe) && fe.Field == "ip" && !errors.Is(err, ErrAddrInUse)
	}
	return errors.Is(err, class)
}

// A released address is not handed out again at once (next-fit), as with
// Allocate.
func TestSubnetAssignKeepsNextFit(t *testing.T) {
	s := mustSubnet(t, SubnetConfig{Subnet: pfx("10.0.0.0/29")})
	var got []string
	for range 2 {
		a, err := s.Assign(Request{})
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, a.String())
	}
	s.Release(ip("10.0.0.2"))
	a, err := s.Assign(Request{})
	if err != nil {
		t.Fatal(err)
	}
	if got = append(got, a.String()); got[0] != "10.0.0.2" || got[1] != "10.0.0.3" || got[2] != "10.0.0.4" {
		t.Errorf("Assign order = %v, want .2 .3 .4", got)
	}
}

func TestSubnetAllocator(t *testing.T) {
	s := mustSubnet(t, SubnetConfig{Subnet: pfx("10.7.0.0/24")})
	var al Allocator = SubnetAllocator{Subnet: s}
	ctx := context.Background()
	p, err := al.Reserve(ctx, Request{Sticky: ip("10.7.0.42")})
	if err != nil || p != pfx("10.7.0.42/24") {
		t.Fatalf("Reserve = %v, %v; want 10.7.0.42/24", p, err)
	}
	if _, err := al.Reserve(ctx, Request{Static: ip("10.7.0.42")}); !errors.Is(err, ErrAddrInUse) {
		t.Errorf("Reserve of a taken static address: %v, want ErrAddrInUse", err)
	}
	if err := al.Release(ctx, p.Addr()); err != nil || s.InUse(p.Addr()) {
		t.Errorf("Release: %v; still in use: %v", err, s.InUse(p.Addr()))
	}
}
