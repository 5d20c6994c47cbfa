package pubsubmqtt5

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
)

// filterRecord is the durable list of the MQTT filters this client id may hold in its broker
// session. A received message names only its topic and subscription identifiers, never the
// filter, so this record is what lets a restarted component UNSUBSCRIBE the filters the app no
// longer subscribes to. A filter is added before its SUBSCRIBE and removed after its UNSUBACK:
// the record may list a filter the session lacks (harmless: UNSUBSCRIBE answers 0x11), never the
// reverse, unless the file is lost (then held messages are still released after the grace, but
// the filter stays in the session).
type filterRecord struct {
	mu      sync.Mutex // guards filters and the file
	path    string     // "" when there is no state directory: nothing is kept
	filters []string
}

type recordFile struct {
	ClientID string   `json:"clientID"`
	Filters  []string `json:"filters"`
}

// defaultStateDir is where records are kept unless stateDir says otherwise: $XDG_STATE_HOME, else
// ~/.local/state, else the temporary folder, then mqdapr/pubsub.
func defaultStateDir() string {
	if d := os.Getenv("XDG_STATE_HOME"); d != "" {
		return filepath.Join(d, "mqdapr", "pubsub")
	}
	if h, err := os.UserHomeDir(); err == nil {
		return filepath.Join(h, ".local", "state", "mqdapr", "pubsub")
	}
	return filepath.Join(os.TempDir(), "mqdapr", "pubsub")
}

// openRecord reads the record of clientID in dir, creating dir if needed. The file is
// <dir>/<clientID, path-escaped>.json.
func openRecord(dir, clientID string) (*filterRecord, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return &filterRecord{}, fmt.Errorf("stateDir %q: %w", dir, err)
	}
	r := &filterRecord{path: filepath.Join(dir, url.PathEscape(clientID)+".json")}
	raw, err := os.ReadFile(r.path)
	if errors.Is(err, fs.ErrNotExist) {
		return r, nil
	}
	if err != nil {
		return r, fmt.Errorf("reading %s: %w", r.path, err)
	}
	var f recordFile
	if err := json.Unmarshal(raw, &f); err != nil {
		return r, fmt.Errorf("%s is not a filter record (%w): delete it, and UNSUBSCRIBE stale filters by hand if any", r.path, err)
	}
	r.filters = f.Filters
	return r, nil
}

func (r *filterRecord) list() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.filters)
}

// add records filter (before its SUBSCRIBE); added is false when it was recorded already.
func (r *filterRecord) add(clientID, filter string) (added bool, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if slices.Contains(r.filters, filter) {
		return false, nil
	}
	r.filters = append(r.filters, filter)
	return true, r.writeLocked(clientID)
}

// remove forgets filter (after its UNSUBACK, or a SUBSCRIBE the broker refused).
func (r *filterRecord) remove(clientID, filter string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	i := slices.Index(r.filters, filter)
	if i < 0 {
		return nil
	}
	r.filters = slices.Delete(r.filters, i, i+1)
	return r.writeLocked(clientID)
}

// writeLocked replaces the file atomically (write, fsync, rename, fsync the folder).
func (r *filterRecord) writeLocked(clientID string) error {
	if r.path == "" {
		return nil
	}
	raw, err := json.MarshalIndent(recordFile{ClientID: clientID, Filters: r.filters}, "", "  ")
	if err != nil {
		return err
	}
	tmp := r.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.Write(raw)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, r.path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", r.path, err)
	}
	if d, err := os.Open(filepath.Dir(r.path)); err == nil {
		_ = d.Sync()
		_ = d.Close()
	}
	return nil
}
