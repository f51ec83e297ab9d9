// Package report holds the wire types of `tether doctor`
// (GET /tether/v1/doctor): what the daemon answers and the CLI prints. It
// imports nothing of the daemon, so the CLI can link it.
package report

// Severity grades a finding.
type Severity string

const (
	// OK: the check found nothing wrong.
	OK Severity = "ok"
	// Info: a fact worth knowing that breaks nothing today.
	Info Severity = "info"
	// Warning: something that may break traffic under some condition, or
	// a degradation (a DNS upstream down while another answers).
	Warning Severity = "warning"
	// Error: traffic that Tether should carry is dropped or misrouted now.
	// Any error makes `tether doctor` exit 1.
	Error Severity = "error"
	// Skipped: the check could not run or does not apply (why in Detail).
	Skipped Severity = "skipped"
)

// Rank orders severities: skipped and ok < info < warning < error.
func (s Severity) Rank() int {
	switch s {
	case Info:
		return 1
	case Warning:
		return 2
	case Error:
		return 3
	}
	return 0
}

// Finding is one thing a check found: what is wrong, why it matters, and
// the command or configuration that fixes it.
type Finding struct {
	Check    string   `json:"check"`
	Severity Severity `json:"severity"`
	// Subject names the object: a table and chain, a network, a route.
	Subject string `json:"subject,omitempty"`
	What    string `json:"what"`
	Why     string `json:"why,omitempty"`
	Fix     string `json:"fix,omitempty"`
}

// Check is the outcome of one check: its worst finding's severity, or ok
// or skipped (with Detail saying why).
type Check struct {
	Name     string   `json:"name"`
	Severity Severity `json:"severity"`
	Detail   string   `json:"detail,omitempty"`
}

// Hop is one step of the path between two sandboxes, in the order a
// packet from A to B takes them.
type Hop struct {
	Step   string `json:"step"`
	Detail string `json:"detail,omitempty"`
	OK     bool   `json:"ok"`
	// Fix, on a hop that is not OK: what makes the path work.
	Fix string `json:"fix,omitempty"`
}

// Path kinds.
const (
	PathSameBridge = "same bridge"
	PathRouted     = "routed between bridges"
	PathOverlay    = "overlay (same host)"
	PathOverlayX   = "overlay across hosts"
	PathNone       = "no path"
)

// Pair is the path from sandbox A to sandbox B.
type Pair struct {
	A    string `json:"a"`
	B    string `json:"b"`
	Path string `json:"path"`
	// Network names the network the path uses ("" when routed between
	// two).
	Network string `json:"network,omitempty"`
	Hops    []Hop  `json:"hops"`
	// BreaksAt is the first hop that is not OK ("" when none).
	BreaksAt string `json:"breaksAt,omitempty"`
}

// Report is the doctor's answer.
type Report struct {
	Checks   []Check   `json:"checks"`
	Findings []Finding `json:"findings"`
	Pair     *Pair     `json:"pair,omitempty"`
	// Broken: at least one finding is an error (the CLI exits 1).
	Broken bool `json:"broken"`
}
