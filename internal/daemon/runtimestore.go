package daemon

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/tether-net/tether/internal/store/bolt"
)

// runtimeStoreFile is the runtime store's file under the exec-root.
const runtimeStoreFile = "state.db"

// openRuntimeStore opens the engine's runtime store (engine.Options.Runtime)
// under the exec-root: the records of sandboxes and links, which die with
// the machine as the namespaces they describe do. Its commits skip fsync: a
// restart of the daemon finds them in the page cache, and a crash of the
// machine takes the namespaces too (on the default /run/tether, a tmpfs,
// the file goes as well). A file that does not open (torn by a power loss
// on an exec-root that is not a tmpfs) is moved aside and a new one made:
// the engine then finds no sandbox, and its garbage collection removes
// whatever is left of theirs.
func openRuntimeStore(execRoot string, log *slog.Logger) (*bolt.Store, error) {
	path := filepath.Join(execRoot, runtimeStoreFile)
	st, err := bolt.Open(path, bolt.WithNoSync())
	if err == nil || errors.Is(err, bolt.ErrLocked) {
		return st, err
	}
	aside := fmt.Sprintf("%s.broken-%s", path, time.Now().UTC().Format("20060102T150405Z"))
	if rerr := os.Rename(path, aside); rerr != nil {
		return nil, fmt.Errorf("%w (and moving it aside failed: %v)", err, rerr)
	}
	log.Error("the runtime store did not open; moved it aside and starting with no sandbox records", "err", err, "moved-to", aside)
	return bolt.Open(path, bolt.WithNoSync())
}
