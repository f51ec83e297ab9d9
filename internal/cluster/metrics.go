package cluster

// PeerCounts returns how many remote endpoints (peers) the listener has
// been told of, by network ID: the endpoints of other live nodes this node
// programs (the tether_overlay_peers gauge, read at scrape time).
func (w *Watcher) PeerCounts() map[string]int {
	w.amu.Lock()
	defer w.amu.Unlock()
	out := make(map[string]int, len(w.told))
	for _, p := range w.peers {
		out[p.NetworkID]++
	}
	return out
}
