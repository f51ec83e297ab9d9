package ipam

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

var (
	// ErrAddrInUse: the address is allocated, reserved, the gateway or an aux
	// address. Returned wrapped with the address; test with errors.Is.
	ErrAddrInUse = errors.New("address already in use")
	// ErrNoAddress: every allocatable address of the range is taken.
	ErrNoAddress = errors.New("no free address")
	// ErrContention: the store-backed allocator lost every race it ran for
	// a free address; trying again later may succeed.
	ErrContention = errors.New("too much contention for addresses, try again")
)

// FieldError is an invalid user-supplied value: the API maps it to 400.
// Field is the option's name as the user wrote it ("subnet", "ip-range",
// "gateway", "aux-address", "ip", "bip", "default-address-pools").
type FieldError struct {
	Field, Value, Reason string
}

func (e *FieldError) Error() string {
	return fmt.Sprintf("invalid %s %q: %s", e.Field, e.Value, e.Reason)
}

// BlockedPool is one pool of a NoFreePoolError: how many candidate subnets it
// has and the distinct blockers that took them, broadest first.
type BlockedPool struct {
	Pool       PoolSpec
	Candidates int
	Blockers   []Blocker
}

// NoFreePoolError is returned by ChooseSubnet when every candidate of every
// pool overlaps a blocker. SuggestBIP and SuggestPool are free on this host
// when valid (zero when no free private space was found, and always for
// IPv6); they are examples for the error text, never used automatically.
type NoFreePoolError struct {
	IPv6        bool // the pools were IPv6 ones
	Pools       []BlockedPool
	SuggestBIP  netip.Prefix // host address with prefix length, e.g. 10.200.0.1/24
	SuggestPool PoolSpec
}

// maxBlockersShown bounds each pool's list in the error text.
const maxBlockersShown = 5

// Error is multi-line: the verdict, each pool (consecutive pools blocked by
// the same things share a line) with its blockers, then how to fix it.
func (e *NoFreePoolError) Error() string {
	var b strings.Builder
	b.WriteString("no free address pool: every candidate subnet overlaps a route, an address or a network\n")
	family := "4"
	if e.IPv6 {
		family = "6"
	}
	if len(e.Pools) == 0 {
		b.WriteString("  no IPv" + family + " pool is configured\n")
	}
	for _, g := range groupPools(e.Pools) {
		writeGroup(&b, g)
	}
	if e.IPv6 {
		e.writeFix6(&b)
	} else {
		e.writeFix(&b)
	}
	fmt.Fprintf(&b, `a subnet is taken when it overlaps a route in any routing table ("ip -%s route show table all"), `+
		`an address on any interface ("ip -%s addr") or an existing network`, family, family)
	return b.String()
}

func groupPools(pools []BlockedPool) [][]BlockedPool {
	var groups [][]BlockedPool
	for _, p := range pools {
		if n := len(groups); n > 0 {
			last := groups[n-1][0]
			if last.Pool.Size == p.Pool.Size && slices.Equal(last.Blockers, p.Blockers) {
				groups[n-1] = append(groups[n-1], p)
				continue
			}
		}
		groups = append(groups, []BlockedPool{p})
	}
	return groups
}

func writeGroup(b *strings.Builder, g []BlockedPool) {
	bases := make([]string, len(g))
	n := 0
	for i, p := range g {
		bases[i] = p.Pool.Base.String()
		n += p.Candidates
	}
	noun, verb := "pool", "is"
	if len(g) > 1 {
		noun, verb = "pools", "are"
	}
	plural := "s"
	if n == 1 {
		plural = ""
	}
	fmt.Fprintf(b, "  %s %s (%d subnet%s of /%d) %s blocked by:\n",
		noun, strings.Join(bases, ", "), n, plural, g[0].Pool.Size, verb)
	bl := g[0].Blockers
	for i, x := range bl {
		if i == maxBlockersShown {
			fmt.Fprintf(b, "      ... and %d more\n", len(bl)-i)
			break
		}
		fmt.Fprintf(b, "      %s\n", x.Source)
	}
}

func (e *NoFreePoolError) writeFix(b *strings.Builder) {
	b.WriteString("to fix it, do one of:\n")
	if e.SuggestBIP.IsValid() {
		fmt.Fprintf(b, "  - set \"bip\" (daemon.json or --bip) to a free address for the default bridge, e.g. \"bip\": %q\n",
			e.SuggestBIP.String())
		fmt.Fprintf(b, "  - set \"default-address-pools\" in daemon.json to a free base, e.g. "+
			"\"default-address-pools\": [{\"base\": %q, \"size\": %d}]\n", e.SuggestPool.Base.String(), e.SuggestPool.Size)
		b.WriteString("    (these examples overlap nothing on this host; check that your wider network does not use them)\n")
	} else {
		b.WriteString("  - set \"bip\" (daemon.json or --bip) to a free address for the default bridge, e.g. \"bip\": \"10.200.0.1/24\"\n")
		b.WriteString("  - set \"default-address-pools\" in daemon.json to a base that is free, e.g. " +
			"\"default-address-pools\": [{\"base\": \"10.200.0.0/16\", \"size\": 24}]\n")
		b.WriteString("    (no free private range was found on this host to suggest; pick one your network does not use)\n")
	}
	b.WriteString("  - or give the network an explicit --subnet\n")
}

func (e *NoFreePoolError) writeFix6(b *strings.Builder) {
	b.WriteString("to fix it, do one of:\n")
	b.WriteString("  - for the default bridge, set \"fixed-cidr-v6\" (daemon.json or --fixed-cidr-v6) to a free IPv6 /64, e.g. \"fixed-cidr-v6\": \"fd00:1:2::/64\"\n")
	b.WriteString("  - add an IPv6 entry to \"default-address-pools\" in daemon.json with a base that is free, e.g. " +
		"{\"base\": \"fd00:1:2::/48\", \"size\": 64}\n")
	b.WriteString("  - or give the network an explicit IPv6 --subnet\n")
}
