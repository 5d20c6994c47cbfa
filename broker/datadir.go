package broker

import (
	"fmt"
	"log/slog"
	"os"
)

// prepareDataDir creates the data directory (and any missing parent) with mode 0700: it holds
// every session, queued message, retained message and persisted key, readable by nobody but the
// broker's user. A directory that already exists keeps its mode (it may be a mounted volume the
// broker does not own), but group or other access to it is logged as a warning naming the path and
// the mode.
func prepareDataDir(dir string, log *slog.Logger) error {
	fi, err := os.Stat(dir)
	switch {
	case os.IsNotExist(err):
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return fmt.Errorf("broker: data directory %q: %w", dir, err)
		}
		// MkdirAll applies the umask, which never adds bits: 0700 or stricter.
		return nil
	case err != nil:
		return fmt.Errorf("broker: data directory %q: %w", dir, err)
	case !fi.IsDir():
		return fmt.Errorf("broker: data directory %q: not a directory (mode %v)", dir, fi.Mode())
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		log.Warn("the data directory is accessible to its group or to others: it holds every session, queued and retained message and persisted key; chmod 0700 it (or mount it for the broker's user only)",
			"path", dir, "mode", fmt.Sprintf("%04o", perm))
	}
	return nil
}
