package clustersim

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"sort"
	"strconv"
	"strings"
)

// Run is one report of TestClusterSimReport, as read back for the scale
// summary.
type Run struct {
	File  string
	Store string // store_kind: etcd or zk
	Hosts int
	// Figures are the report's numeric leaves by dotted path
	// ("phases.churn.convergence_add.p99_ms").
	Figures map[string]float64
	OK      bool
}

// notFigures are report leaves that describe the run rather than measure
// it: no ratio is taken of them.
var notFigures = []string{"hosts", "endpoints_per_host", "ttl_s", "machine.", "knobs.", "loadavg"}

// ReadRun reads a report file.
func ReadRun(file string) (Run, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return Run{}, err
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		return Run{}, fmt.Errorf("%s: %w", file, err)
	}
	return runOf(file, m)
}

func runOf(file string, m map[string]any) (Run, error) {
	r := Run{File: file, Figures: map[string]float64{}}
	r.Store, _ = m["store_kind"].(string)
	h, _ := m["hosts"].(float64)
	r.Hosts = int(h)
	r.OK, _ = m["ok"].(bool)
	if r.Store == "" || r.Hosts <= 0 {
		return Run{}, fmt.Errorf("%s: no store_kind or hosts: not a cluster-sim report", file)
	}
	flatten("", m, r.Figures)
	return r, nil
}

func flatten(prefix string, v any, out map[string]float64) {
	switch v := v.(type) {
	case map[string]any:
		for k, x := range v {
			flatten(prefix+k+".", x, out)
		}
	case float64:
		key := strings.TrimSuffix(prefix, ".")
		for _, skip := range notFigures {
			if key == skip || strings.HasPrefix(key, skip) {
				return
			}
		}
		out[key] = v
	}
}

// Growth is one figure across the runs of one store.
type Growth struct {
	Values map[string]float64 `json:"values"` // by hosts
	// RatioToBase is each value over the smallest run's (none when that is
	// not positive).
	RatioToBase map[string]float64 `json:"ratio_to_base"`
	// Exponent is log(value ratio) / log(host ratio) between consecutive
	// sizes ("50-200") and from the smallest to the largest ("50-500").
	Exponent map[string]float64 `json:"exponent,omitempty"`
	// GrowsAs names the smallest-to-largest exponent's complexity.
	GrowsAs string `json:"grows_as,omitempty"`
}

// StoreSummary is every figure of one store's runs.
type StoreSummary struct {
	BaseHosts int               `json:"base_hosts"`
	Sizes     []int             `json:"sizes"`
	Files     map[string]string `json:"files"`
	Failed    []string          `json:"failed_runs,omitempty"` // runs whose report says ok: false
	Figures   map[string]Growth `json:"figures"`
}

// Summarize groups runs by store and gives every figure present in the
// smallest run against it. Runs of the same store and size: the last
// wins.
func Summarize(runs []Run) map[string]StoreSummary {
	byStore := map[string]map[int]Run{}
	for _, r := range runs {
		if byStore[r.Store] == nil {
			byStore[r.Store] = map[int]Run{}
		}
		byStore[r.Store][r.Hosts] = r
	}
	out := map[string]StoreSummary{}
	for st, bySize := range byStore {
		sizes := make([]int, 0, len(bySize))
		for h := range bySize {
			sizes = append(sizes, h)
		}
		sort.Ints(sizes)
		s := StoreSummary{BaseHosts: sizes[0], Sizes: sizes, Files: map[string]string{}, Figures: map[string]Growth{}}
		for _, h := range sizes {
			s.Files[strconv.Itoa(h)] = bySize[h].File
			if !bySize[h].OK {
				s.Failed = append(s.Failed, bySize[h].File)
			}
		}
		base := bySize[sizes[0]]
		for key := range base.Figures {
			s.Figures[key] = growth(key, sizes, bySize)
		}
		out[st] = s
	}
	return out
}

func growth(key string, sizes []int, bySize map[int]Run) Growth {
	g := Growth{Values: map[string]float64{}, RatioToBase: map[string]float64{}, Exponent: map[string]float64{}}
	base := bySize[sizes[0]].Figures[key]
	var have []int
	for _, h := range sizes {
		v, ok := bySize[h].Figures[key]
		if !ok {
			continue
		}
		have = append(have, h)
		g.Values[strconv.Itoa(h)] = v
		if base > 0 { // (a negative time, a value near the clock's grain, has no ratio)
			g.RatioToBase[strconv.Itoa(h)] = round(v/base, 3)
		}
	}
	for i := 1; i < len(have); i++ {
		if e, ok := Exponent(have[i-1], have[i], g.Values[strconv.Itoa(have[i-1])], g.Values[strconv.Itoa(have[i])]); ok {
			g.Exponent[fmt.Sprintf("%d-%d", have[i-1], have[i])] = round(e, 2)
		}
	}
	if len(have) > 2 {
		first, last := have[0], have[len(have)-1]
		if e, ok := Exponent(first, last, g.Values[strconv.Itoa(first)], g.Values[strconv.Itoa(last)]); ok {
			g.Exponent[fmt.Sprintf("%d-%d", first, last)] = round(e, 2)
		}
	}
	if len(have) > 1 {
		first, last := have[0], have[len(have)-1]
		if e, ok := Exponent(first, last, g.Values[strconv.Itoa(first)], g.Values[strconv.Itoa(last)]); ok {
			g.GrowsAs = Complexity(e)
		}
	}
	return g
}

// Exponent is the growth exponent of a figure from h1 hosts (value v1) to
// h2 hosts (v2): log(v2/v1) / log(h2/h1). ok is false when it is not
// defined (a value not positive, or the same size).
func Exponent(h1, h2 int, v1, v2 float64) (float64, bool) {
	if h1 <= 0 || h2 <= 0 || h1 == h2 || v1 <= 0 || v2 <= 0 {
		return 0, false
	}
	return math.Log(v2/v1) / math.Log(float64(h2)/float64(h1)), true
}

// Complexity names a growth exponent over hosts. Endpoints per host are
// fixed in the matrix, so the endpoints in the cluster grow as hosts do:
// O(endpoints) reads as O(hosts), and O(hosts × endpoints) as O(hosts²).
func Complexity(e float64) string {
	switch {
	case e < -0.25:
		return fmt.Sprintf("shrinks (hosts^%.2f)", e)
	case e < 0.25:
		return "O(1)"
	case e < 0.75:
		return fmt.Sprintf("sublinear (hosts^%.2f)", e)
	case e < 1.25:
		return "O(hosts)"
	case e < 1.75:
		return fmt.Sprintf("superlinear (hosts^%.2f)", e)
	case e < 2.25:
		return "O(hosts × endpoints)"
	default:
		return fmt.Sprintf("hosts^%.2f", e)
	}
}

// Headline are the figures issue 21 asks for, in the order a report
// states them (every figure is in the summary; these are repeated on top).
var Headline = []string{
	"phases.attach.convergence_add.p50_ms", "phases.attach.convergence_add.p99_ms",
	"phases.churn.convergence_add.p50_ms", "phases.churn.convergence_add.p99_ms",
	"phases.churn.convergence_remove.p50_ms", "phases.churn.convergence_remove.p99_ms",
	"phases.attach.per_change.store_writes", "phases.churn.per_change.store_writes",
	"phases.attach.per_change.watch_events", "phases.churn.per_change.watch_events",
	"phases.attach.per_change.store_cpu_ms", "phases.churn.per_change.store_cpu_ms",
	"phases.churn.store_db_bytes",
	"phases.network.everywhere.p99_ms", "phases.network.everywhere.max_ms",
	"phases.store_restart.recovered_after_up_ms",
	"phases.dead_host.gone_everywhere.max_ms", "phases.kill10.gone_everywhere.max_ms",
	"heap_per_host_kib", "heap_per_remote_endpoint_bytes",
}

// HeadlineOf picks the headline figures of a store's summary.
func HeadlineOf(s StoreSummary) map[string]Growth {
	out := map[string]Growth{}
	for _, k := range Headline {
		if g, ok := s.Figures[k]; ok {
			out[k] = g
		}
	}
	return out
}

func round(v float64, digits int) float64 {
	p := math.Pow(10, float64(digits))
	return math.Round(v*p) / p
}
