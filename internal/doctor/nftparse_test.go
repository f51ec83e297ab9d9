package doctor

import (
	"context"
	"encoding/binary"
	"net"
	"net/netip"
	"reflect"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
)

func ifname(s string) []byte {
	b := make([]byte, 16)
	copy(b, s)
	return b
}

func TestRuleOf(t *testing.T) {
	iif := &expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1}
	oif := &expr.Meta{Key: expr.MetaKeyOIFNAME, Register: 1}
	saddr := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4}
	daddr6 := &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 24, Len: 16}
	eq := func(b []byte) *expr.Cmp { return &expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: b} }
	drop, accept := &expr.Verdict{Kind: expr.VerdictDrop}, &expr.Verdict{Kind: expr.VerdictAccept}
	tests := []struct {
		name  string
		fam   nftables.TableFamily
		exprs []expr.Any
		want  Rule
	}{
		{"drop all", nftables.TableFamilyINet, []expr.Any{&expr.Counter{}, drop}, Rule{Verdict: "drop"}},
		{"reject", nftables.TableFamilyINet, []expr.Any{&expr.Reject{}}, Rule{Verdict: "reject"}},
		{"iifname accept", nftables.TableFamilyIPv4, []expr.Any{iif, eq(ifname("tth-app")), accept}, Rule{IIF: "tth-app", Verdict: "accept"}},
		{"iptables -i br+", nftables.TableFamilyIPv4, []expr.Any{iif, eq([]byte("br")), &expr.Counter{}, accept}, Rule{IIF: "br*", Verdict: "accept"}},
		{"oifname != x", nftables.TableFamilyIPv4, []expr.Any{oif, &expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: ifname("x")}, drop}, Rule{Other: true, Verdict: "drop"}},
		{"inet ip saddr/16", nftables.TableFamilyINet, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, eq([]byte{2}),
			saddr, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{255, 255, 0, 0}, Xor: make([]byte, 4)},
			eq([]byte{10, 20, 0, 0}), drop}, Rule{Src: netip.MustParsePrefix("10.20.0.0/16"), Verdict: "drop", NFProto: "ipv4"}},
		{"inet meta nfproto ipv6 drop", nftables.TableFamilyINet, []expr.Any{
			&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, eq([]byte{10}), drop}, Rule{Verdict: "drop", NFProto: "ipv6"}},
		{"iptables -j REJECT", nftables.TableFamilyIPv4, []expr.Any{&expr.Target{Name: "REJECT"}}, Rule{Verdict: "reject"}},
		{"iptables -j LOG", nftables.TableFamilyIPv4, []expr.Any{&expr.Target{Name: "LOG"}}, Rule{Other: true}},
		{"ip saddr/24 as nft writes it (3 bytes)", nftables.TableFamilyIPv4, []expr.Any{
			&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 3}, eq([]byte{10, 71, 0}), drop},
			Rule{Src: netip.MustParsePrefix("10.71.0.0/24"), Verdict: "drop"}},
		{"ip saddr exact", nftables.TableFamilyIPv4, []expr.Any{saddr, eq([]byte{10, 20, 0, 9}), drop}, Rule{Src: netip.MustParsePrefix("10.20.0.9/32"), Verdict: "drop"}},
		{"ip6 daddr", nftables.TableFamilyIPv6, []expr.Any{daddr6, eq(netip.MustParseAddr("fd00::1").AsSlice()), drop}, Rule{Dst: netip.MustParsePrefix("fd00::1/128"), Verdict: "drop"}},
		{"ct state", nftables.TableFamilyIPv4, []expr.Any{&expr.Ct{Register: 1, Key: expr.CtKeySTATE},
			&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: []byte{6, 0, 0, 0}, Xor: make([]byte, 4)},
			&expr.Cmp{Op: expr.CmpOpNeq, Register: 1, Data: make([]byte, 4)}, accept}, Rule{CtState: true, Verdict: "accept"}},
		{"set lookup", nftables.TableFamilyIPv4, []expr.Any{iif, &expr.Lookup{SourceRegister: 1, SetName: "s"}, drop}, Rule{Other: true, Verdict: "drop"}},
		{"jump", nftables.TableFamilyIPv4, []expr.Any{&expr.Verdict{Kind: expr.VerdictJump, Chain: "x"}}, Rule{Verdict: "jump"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ruleOf(&nftables.Rule{Exprs: tt.exprs}, tt.fam)
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("got %+v, want %+v", got, tt.want)
			}
		})
	}
}

func TestChainOf(t *testing.T) {
	drop := nftables.ChainPolicyDrop
	prio := nftables.ChainPriority(5)
	ch := &nftables.Chain{Name: "FORWARD", Table: &nftables.Table{Name: "filter", Family: nftables.TableFamilyIPv4},
		Hooknum: nftables.ChainHookForward, Priority: &prio, Type: nftables.ChainTypeFilter, Policy: &drop}
	r := &nftables.Rule{Handle: 4, UserData: userdata.AppendString(nil, userdata.TypeComment, "hi"), Exprs: []expr.Any{&expr.Verdict{Kind: expr.VerdictAccept}}}
	got := chainOf(ch, []*nftables.Rule{r})
	want := Chain{Family: "ip", Table: "filter", Name: "FORWARD", Hook: "forward", Type: "filter", Priority: 5, Policy: "drop",
		Rules: []Rule{{Handle: 4, Comment: "hi", Verdict: "accept"}}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %+v, want %+v", got, want)
	}
}

// The prober counts an answer with its query's ID, ignores others, and
// reports silence.
func TestUDPProber(t *testing.T) {
	tests := []struct {
		name    string
		answer  func(q []byte) [][]byte
		wantErr bool
	}{
		{"answers", func(q []byte) [][]byte { return [][]byte{reply(q, binary.BigEndian.Uint16(q))} }, false},
		{"wrong ID first", func(q []byte) [][]byte {
			return [][]byte{reply(q, binary.BigEndian.Uint16(q)+1), reply(q, binary.BigEndian.Uint16(q))}
		}, false},
		{"wrong ID only", func(q []byte) [][]byte { return [][]byte{reply(q, binary.BigEndian.Uint16(q)+1)} }, true},
		{"silent", func([]byte) [][]byte { return nil }, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pc, err := net.ListenPacket("udp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer pc.Close()
			go func() {
				buf := make([]byte, 512)
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				for _, a := range tt.answer(buf[:n]) {
					pc.WriteTo(a, from)
				}
			}()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			err = UDPProber{}.Probe(ctx, netip.MustParseAddrPort(pc.LocalAddr().String()))
			if (err != nil) != tt.wantErr {
				t.Errorf("err %v, want error %v", err, tt.wantErr)
			}
		})
	}
}

func reply(q []byte, id uint16) []byte {
	r := append([]byte(nil), q...)
	binary.BigEndian.PutUint16(r, id)
	r[2] |= 0x80
	return r
}
