package clustersim

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tether-net/tether/internal/cluster"
)

// churnInterval is the time between two replacements when pct percent of
// total endpoints are replaced per second (one a second when that rounds
// to nothing; never under a millisecond).
func churnInterval(total int, pct float64) time.Duration {
	perSec := float64(total) * pct / 100
	if perSec <= 0 {
		return time.Second
	}
	return max(time.Duration(float64(time.Second)/perSec), time.Millisecond)
}

// Planner picks the replacements of a churn: which endpoint is withdrawn,
// and on which agent its successor is attached. Only settled endpoints
// (their record programmed everywhere: Settle) are withdrawn, so every
// removal is measured against agents that had the endpoint; a successor
// goes to the same agent half the time, else to a random live agent that
// holds fewer than max endpoints.
type Planner struct {
	rng     *rand.Rand
	max     int
	count   []int // endpoints per agent, settled or not; -1: agent dead
	pending map[string]int
	ready   []string       // settled endpoints, withdrawable
	owner   map[string]int // endpoint -> agent, for ready and pending ones
}

// NewPlanner plans over agents agents, each holding at most max endpoints.
func NewPlanner(seed uint64, agents, max int) *Planner {
	return &Planner{rng: rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15)), max: max, count: make([]int, agents),
		pending: map[string]int{}, owner: map[string]int{}}
}

// Add notes endpoint id, attached on agent, not yet settled.
func (p *Planner) Add(id string, agent int) {
	p.pending[id] = agent
	p.owner[id] = agent
	p.count[agent]++
}

// Unreserve gives back the place Next reserved on agent for a successor
// (its attach failed, or Add counted it again).
func (p *Planner) Unreserve(agent int) { p.count[agent]-- }

// Settle makes the pending endpoints for which settled is true
// withdrawable.
func (p *Planner) Settle(settled func(id string) bool) {
	for id := range p.pending {
		if settled(id) {
			delete(p.pending, id)
			p.ready = append(p.ready, id)
		}
	}
}

// Kill marks agent dead: its endpoints are no longer planned with, and
// nothing is attached to it.
func (p *Planner) Kill(agent int) {
	p.count[agent] = -1
	for id, a := range p.owner {
		if a == agent {
			delete(p.owner, id)
			delete(p.pending, id)
		}
	}
	kept := p.ready[:0]
	for _, id := range p.ready {
		if _, ok := p.owner[id]; ok {
			kept = append(kept, id)
		}
	}
	p.ready = kept
}

// Ready is how many endpoints could be withdrawn now.
func (p *Planner) Ready() int { return len(p.ready) }

// Next picks a settled endpoint to withdraw (from its agent) and the
// agent its successor goes to; the successor's place is reserved on to.
// ok is false when no endpoint is settled or no agent has room.
func (p *Planner) Next() (victim string, from, to int, ok bool) {
	if len(p.ready) == 0 {
		return "", 0, 0, false
	}
	i := p.rng.IntN(len(p.ready))
	victim = p.ready[i]
	from = p.owner[victim]
	to = from
	if p.rng.IntN(2) == 1 {
		to = p.other()
	}
	if to < 0 {
		return "", 0, 0, false // nowhere to go (cannot happen: from has room once victim leaves)
	}
	p.ready[i] = p.ready[len(p.ready)-1]
	p.ready = p.ready[:len(p.ready)-1]
	delete(p.owner, victim)
	p.count[from]--
	p.count[to]++
	return victim, from, to, true
}

// other is a random live agent with room for one more endpoint, or -1.
func (p *Planner) other() int {
	for range 8 {
		if a := p.rng.IntN(len(p.count)); p.count[a] >= 0 && p.count[a] < p.max {
			return a
		}
	}
	start := p.rng.IntN(len(p.count))
	for k := range p.count {
		if a := (start + k) % len(p.count); p.count[a] >= 0 && p.count[a] < p.max {
			return a
		}
	}
	return -1
}

// Churn replaces endpoints at a steady rate: one every Interval, each a
// withdrawal (Detach, retried while the store is away) and an attach of a
// successor on the agent the Planner chose (its publication waited for
// when the store is away). Replacements run concurrently, at most
// MaxInFlight; a tick that finds that many in flight is counted Skipped.
type Churn struct {
	Agents      []*Agent
	Network     cluster.NetworkRecord
	Tracker     *Tracker
	Planner     *Planner
	Interval    time.Duration
	MaxInFlight int
	// Live are the endpoints attached now, by ID: Run keeps it.
	Live map[string]cluster.EndpointRecord

	mu       sync.Mutex
	adds     []string // successors attached (their IDs)
	dels     []string // endpoints withdrawn
	failures []string
	seq      atomic.Int64
}

// ChurnResult is what one Run did.
type ChurnResult struct {
	Adds, Dels []string // endpoint IDs attached and withdrawn
	Planned    int
	Skipped    int      // ticks with MaxInFlight replacements in flight, or nothing settled
	Failures   []string // replacements that failed (first 20)
	Failed     int
}

// Run churns for d (then waits for the replacements in flight), calling
// at(elapsed) on every tick (the store-restart phase uses it).
func (c *Churn) Run(ctx context.Context, d time.Duration, at func(elapsed time.Duration)) ChurnResult {
	var wg sync.WaitGroup
	var inflight atomic.Int64
	var planned, skipped int
	tick := time.NewTicker(c.Interval)
	defer tick.Stop()
	start := time.Now()
	for time.Since(start) < d && ctx.Err() == nil {
		<-tick.C
		if at != nil {
			at(time.Since(start))
		}
		c.mu.Lock()
		c.Planner.Settle(c.Tracker.Complete)
		var victim cluster.EndpointRecord
		vid, from, to, ok := c.Planner.Next()
		if ok {
			victim = c.Live[vid]
		}
		c.mu.Unlock()
		if !ok || inflight.Load() >= int64(c.MaxInFlight) {
			if ok { // put it back: not withdrawn
				c.mu.Lock()
				c.Planner.Unreserve(to)
				c.Planner.Add(vid, from)
				c.mu.Unlock()
			}
			skipped++
			continue
		}
		planned++
		inflight.Add(1)
		wg.Go(func() {
			defer inflight.Add(-1)
			c.replace(ctx, victim, c.Agents[from], c.Agents[to])
		})
	}
	wg.Wait()
	c.mu.Lock()
	defer c.mu.Unlock()
	res := ChurnResult{Adds: c.adds, Dels: c.dels, Planned: planned, Skipped: skipped, Failed: len(c.failures)}
	res.Failures = c.failures[:min(len(c.failures), 20)]
	c.adds, c.dels, c.failures = nil, nil, nil
	return res
}

// replace withdraws victim from its agent and attaches a successor on to.
func (c *Churn) replace(ctx context.Context, victim cluster.EndpointRecord, from, to *Agent) {
	for {
		err := from.Detach(ctx, victim, c.Tracker)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			c.fail(to.Index, fmt.Errorf("withdraw %s: %w", victim.SandboxName, err))
			return
		}
		time.Sleep(200 * time.Millisecond) // the store is away: a withdrawal is safe to repeat
	}
	c.mu.Lock()
	delete(c.Live, victim.ID)
	c.dels = append(c.dels, victim.ID)
	c.mu.Unlock()
	name := fmt.Sprintf("ch%04d-%06d", to.Index, c.seq.Add(1))
	rec, err := to.Attach(ctx, c.Network, name, c.Tracker)
	for err != nil && rec.ID == "" && ctx.Err() == nil { // no address taken: try again
		time.Sleep(200 * time.Millisecond)
		rec, err = to.Attach(ctx, c.Network, name, c.Tracker)
	}
	if err != nil && rec.ID != "" {
		err = to.AwaitPublished(ctx, rec.ID, c.Tracker) // the store was away: the publication goes on
	}
	if err != nil {
		c.fail(to.Index, fmt.Errorf("attach %s: %w", name, err))
		return
	}
	c.mu.Lock()
	c.Live[rec.ID] = rec
	c.adds = append(c.adds, rec.ID)
	c.Planner.Add(rec.ID, to.Index)
	c.Planner.Unreserve(to.Index) // Add counted it again
	c.mu.Unlock()
}

func (c *Churn) fail(to int, err error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.Planner.Unreserve(to)
	c.failures = append(c.failures, err.Error())
}
