package firewall

import (
	"encoding/hex"
	"fmt"
	"slices"
	"strings"
	"syscall"

	"github.com/google/nftables"
)

// fakeConn is an in-memory nf_tables standing in for *nftables.Conn: queued
// changes are applied at Flush all together or not at all, as the kernel
// does, and every batch and created object is recorded.
type fakeConn struct {
	tables  []*fakeTable
	queue   []func(*fakeConn) error
	handle  uint64
	batches int            // non-empty batches applied
	created map[string]int // tables, sets, chains, rules created
	deleted map[string]int // tables deleted
	// failFlushes makes the next n Flush calls fail (nothing applied).
	failFlushes int
}

type fakeTable struct {
	t      nftables.Table
	sets   []*fakeSet
	chains []*nftables.Chain
	rules  map[string][]*nftables.Rule
}

type fakeSet struct {
	s   nftables.Set
	els map[string]nftables.SetElement // by elemKey
}

func newFakeConn() *fakeConn {
	return &fakeConn{created: map[string]int{}, deleted: map[string]int{}}
}

func elemKey(e nftables.SetElement) string {
	k := hex.EncodeToString(e.Key)
	if e.IntervalEnd {
		k += "/end"
	}
	return k
}

func enoent(what string) error { return fmt.Errorf("%s: %w", what, syscall.ENOENT) }

func (c *fakeConn) table(family nftables.TableFamily, name string) *fakeTable {
	for _, t := range c.tables {
		if t.t.Family == family && t.t.Name == name {
			return t
		}
	}
	return nil
}

func (t *fakeTable) set(name string) *fakeSet {
	for _, s := range t.sets {
		if s.s.Name == name {
			return s
		}
	}
	return nil
}

func (t *fakeTable) chain(name string) *nftables.Chain {
	for _, c := range t.chains {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// clone deep-copies the state a batch works on.
func (c *fakeConn) clone() *fakeConn {
	n := *c
	n.created, n.deleted = cloneMap(c.created), cloneMap(c.deleted)
	n.tables = nil
	for _, t := range c.tables {
		nt := &fakeTable{t: t.t, chains: slices.Clone(t.chains), rules: map[string][]*nftables.Rule{}}
		for k, v := range t.rules {
			nt.rules[k] = slices.Clone(v)
		}
		for _, s := range t.sets {
			nt.sets = append(nt.sets, &fakeSet{s: s.s, els: cloneMap(s.els)})
		}
		n.tables = append(n.tables, nt)
	}
	return &n
}

func cloneMap[K comparable, V any](m map[K]V) map[K]V {
	out := make(map[K]V, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (c *fakeConn) Flush() error {
	q := c.queue
	c.queue = nil
	if len(q) == 0 {
		return nil
	}
	if c.failFlushes > 0 {
		c.failFlushes--
		return fmt.Errorf("injected failure: %w", syscall.EPERM)
	}
	next := c.clone()
	for _, op := range q {
		if err := op(next); err != nil {
			return fmt.Errorf("conn.Receive: %w", err)
		}
	}
	next.batches++
	*c = *next
	return nil
}

func (c *fakeConn) ListTablesOfFamily(f nftables.TableFamily) ([]*nftables.Table, error) {
	var out []*nftables.Table
	for _, t := range c.tables {
		if t.t.Family == f {
			tt := t.t
			out = append(out, &tt)
		}
	}
	return out, nil
}

func (c *fakeConn) ListChainsOfTableFamily(f nftables.TableFamily) ([]*nftables.Chain, error) {
	var out []*nftables.Chain
	for _, t := range c.tables {
		if t.t.Family != f {
			continue
		}
		for _, ch := range t.chains {
			cc := *ch
			tt := t.t
			cc.Table = &tt
			out = append(out, &cc)
		}
	}
	return out, nil
}

func (c *fakeConn) GetSets(t *nftables.Table) ([]*nftables.Set, error) {
	ft := c.table(t.Family, t.Name)
	if ft == nil {
		return nil, enoent("table " + t.Name)
	}
	var out []*nftables.Set
	for _, s := range ft.sets {
		ss := s.s
		ss.Table = t
		out = append(out, &ss)
	}
	return out, nil
}

// GetSetElements returns elements in descending key order: the kernel
// promises no order, and the parser must not rely on one.
func (c *fakeConn) GetSetElements(s *nftables.Set) ([]nftables.SetElement, error) {
	ft := c.table(s.Table.Family, s.Table.Name)
	if ft == nil || ft.set(s.Name) == nil {
		return nil, enoent("set " + s.Name)
	}
	fs := ft.set(s.Name)
	keys := make([]string, 0, len(fs.els))
	for k := range fs.els {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	slices.Reverse(keys)
	var out []nftables.SetElement
	for _, k := range keys {
		out = append(out, fs.els[k])
	}
	return out, nil
}

func (c *fakeConn) GetRules(t *nftables.Table, ch *nftables.Chain) ([]*nftables.Rule, error) {
	ft := c.table(t.Family, t.Name)
	if ft == nil || ft.chain(ch.Name) == nil {
		return nil, enoent("chain " + ch.Name)
	}
	return slices.Clone(ft.rules[ch.Name]), nil
}

func (c *fakeConn) AddTable(t *nftables.Table) *nftables.Table {
	tt := *t
	c.queue = append(c.queue, func(s *fakeConn) error {
		if s.table(tt.Family, tt.Name) == nil {
			s.tables = append(s.tables, &fakeTable{t: tt, rules: map[string][]*nftables.Rule{}})
			s.created["table"]++
		}
		return nil
	})
	return t
}

func (c *fakeConn) DelTable(t *nftables.Table) {
	tt := *t
	c.queue = append(c.queue, func(s *fakeConn) error {
		i := slices.IndexFunc(s.tables, func(x *fakeTable) bool { return x.t.Family == tt.Family && x.t.Name == tt.Name })
		if i < 0 {
			return enoent("table " + tt.Name)
		}
		s.tables = slices.Delete(s.tables, i, i+1)
		s.deleted["table"]++
		return nil
	})
}

func (c *fakeConn) AddSet(set *nftables.Set, vals []nftables.SetElement) error {
	ss := *set
	c.queue = append(c.queue, func(s *fakeConn) error {
		ft := s.table(ss.Table.Family, ss.Table.Name)
		if ft == nil {
			return enoent("table " + ss.Table.Name)
		}
		if ft.set(ss.Name) == nil {
			ss.Table = nil
			ft.sets = append(ft.sets, &fakeSet{s: ss, els: map[string]nftables.SetElement{}})
			s.created["set"]++
		}
		return nil
	})
	if len(vals) == 0 {
		return nil
	}
	return c.SetAddElements(set, vals)
}

func (c *fakeConn) AddChain(ch *nftables.Chain) *nftables.Chain {
	cc := *ch
	c.queue = append(c.queue, func(s *fakeConn) error {
		ft := s.table(cc.Table.Family, cc.Table.Name)
		if ft == nil {
			return enoent("table " + cc.Table.Name)
		}
		if ft.chain(cc.Name) == nil {
			x := cc
			x.Table = nil
			ft.chains = append(ft.chains, &x)
			s.created["chain"]++
		}
		return nil
	})
	return ch
}

func (c *fakeConn) AddRule(r *nftables.Rule) *nftables.Rule {
	rr := *r
	c.queue = append(c.queue, func(s *fakeConn) error {
		ft := s.table(rr.Table.Family, rr.Table.Name)
		if ft == nil || ft.chain(rr.Chain.Name) == nil {
			return enoent("chain " + rr.Chain.Name)
		}
		s.handle++
		x := rr
		x.Handle = s.handle
		ft.rules[rr.Chain.Name] = append(ft.rules[rr.Chain.Name], &x)
		s.created["rule"]++
		return nil
	})
	return r
}

func (c *fakeConn) elements(set *nftables.Set, vals []nftables.SetElement, fn func(*fakeSet, nftables.SetElement) error) {
	t, name := *set.Table, set.Name
	vals = slices.Clone(vals)
	c.queue = append(c.queue, func(s *fakeConn) error {
		ft := s.table(t.Family, t.Name)
		if ft == nil || ft.set(name) == nil {
			return enoent("set " + name)
		}
		for _, v := range vals {
			if err := fn(ft.set(name), v); err != nil {
				return err
			}
		}
		return nil
	})
}

func (c *fakeConn) SetAddElements(set *nftables.Set, vals []nftables.SetElement) error {
	c.elements(set, vals, func(fs *fakeSet, v nftables.SetElement) error {
		fs.els[elemKey(v)] = v
		return nil
	})
	return nil
}

func (c *fakeConn) SetDeleteElements(set *nftables.Set, vals []nftables.SetElement) error {
	c.elements(set, vals, func(fs *fakeSet, v nftables.SetElement) error {
		if _, ok := fs.els[elemKey(v)]; !ok {
			return enoent("element " + elemKey(v))
		}
		delete(fs.els, elemKey(v))
		return nil
	})
	return nil
}

// dump describes every table the fake holds, for before/after comparisons.
func (c *fakeConn) dump() string { return c.dumpFamily(0) }

// dumpFamily is dump of the tables of one family (0: all).
func (c *fakeConn) dumpFamily(fam nftables.TableFamily) string {
	var b strings.Builder
	for _, t := range c.tables {
		if fam != 0 && t.t.Family != fam {
			continue
		}
		fmt.Fprintf(&b, "table %d %s\n", t.t.Family, t.t.Name)
		for _, s := range t.sets {
			keys := make([]string, 0, len(s.els))
			for k := range s.els {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			fmt.Fprintf(&b, "  set %s %v\n", s.s.Name, keys)
		}
		for _, ch := range t.chains {
			fmt.Fprintf(&b, "  chain %s:", ch.Name)
			for _, r := range t.rules[ch.Name] {
				fmt.Fprintf(&b, " %d(%s)", r.Handle, commentOf(r))
			}
			b.WriteString("\n")
		}
	}
	return b.String()
}

// ours reads Tether's table ip tether back as entries.
func (c *fakeConn) ours() entries { return c.oursIn(fam4) }

// oursIn reads family fm's table back as entries keyed by fm.key(set).
func (c *fakeConn) oursIn(fm *family) entries {
	e := entries{}
	ft := c.table(fm.nf, TableName)
	if ft == nil {
		return e
	}
	for _, s := range ft.sets {
		els, _ := c.GetSetElements(&nftables.Set{Table: &ft.t, Name: s.s.Name})
		for id, v := range parseElements(s.s.Name, els) {
			e.put(fm.key(s.s.Name), id, v...)
		}
	}
	return e
}
