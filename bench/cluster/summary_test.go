package clustersim

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"time"
)

// TestClusterScaleSummary writes the scale matrix's summary (scale.sh
// runs it): BENCH_SCALE_RUNS are the runs' report files (space
// separated), BENCH_SCALE_OUT the summary file; every figure of each run
// against the smallest run of the same store, with growth exponents.
// BENCH_SCALE_NOTE is added to the summary as it is (what scale.sh set).
func TestClusterScaleSummary(t *testing.T) {
	files, out := strings.Fields(os.Getenv("BENCH_SCALE_RUNS")), os.Getenv("BENCH_SCALE_OUT")
	if len(files) == 0 || out == "" {
		t.Skip("BENCH_SCALE_RUNS and BENCH_SCALE_OUT write the scale summary (bench/cluster/scale.sh)")
	}
	var runs []Run
	for _, f := range files {
		r, err := ReadRun(f)
		if err != nil {
			t.Fatal(err)
		}
		runs = append(runs, r)
	}
	stores := Summarize(runs)
	headline := map[string]any{}
	for st, s := range stores {
		headline[st] = HeadlineOf(s)
	}
	sum := map[string]any{
		"date": time.Now().UTC().Format(time.RFC3339), "commit": gitCommit(), "runs": files,
		"note":     os.Getenv("BENCH_SCALE_NOTE"),
		"method":   "each figure over the smallest run of the same store in this session (ratio_to_base); exponent = log(value ratio) / log(host ratio) between sizes; grows_as names the smallest-to-largest exponent. Endpoints per host are fixed, so O(endpoints) reads as O(hosts) and O(hosts × endpoints) as O(hosts²).",
		"headline": headline,
		"stores":   stores,
	}
	b, err := json.MarshalIndent(sum, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(out, append(b, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
	for st, s := range stores {
		for _, k := range Headline {
			if g, ok := s.Figures[k]; ok {
				t.Logf("%s %s: %v ratio %v exponent %v %s", st, k, g.Values, g.RatioToBase, g.Exponent, g.GrowsAs)
			}
		}
		if len(s.Failed) > 0 {
			t.Errorf("%s: runs that failed: %v", st, s.Failed)
		}
	}
	t.Logf("wrote %s", out)
}
