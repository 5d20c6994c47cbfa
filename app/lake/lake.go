package lake

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"
)

// SyncFunc makes a file's written bytes durable; os.File.Sync unless a test injects one.
type SyncFunc func(f *os.File) error

// Options configure a Lake.
type Options struct {
	// Root is the lake folder; it is created if missing.
	Root string
	// Replica names this writer; it is part of every file name so that replicas never share a file.
	Replica string
	// Sync is called for every group commit; nil means (*os.File).Sync.
	Sync SyncFunc
	// MaxOpen bounds the open partition files; beyond it the least recently used idle file is
	// synced and closed (it is reopened on its next row). Default 64.
	MaxOpen int
}

var namePattern = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$`)

// Lake writes rows to <Root>/date=YYYY-MM-DD/asset=<asset>/part-<Replica>.jsonl. It is safe for
// concurrent use.
type Lake struct {
	root    string
	replica string
	sync    SyncFunc

	maxOpen int

	mu     sync.Mutex // guards files, tick and closed, and every partFile's users and lastUse
	files  map[string]*partFile
	tick   uint64 // logical clock of file use, for LRU eviction
	closed bool
}

// New checks opts and creates the root folder. It opens no file.
func New(opts Options) (*Lake, error) {
	if opts.Root == "" {
		return nil, fmt.Errorf("%w: empty lake folder", ErrInvalidPath)
	}
	if !namePattern.MatchString(opts.Replica) {
		return nil, fmt.Errorf("%w: replica name %q; want 1-128 of A-Z a-z 0-9 . _ - starting with a letter or digit", ErrInvalidPath, opts.Replica)
	}
	if err := os.MkdirAll(opts.Root, 0o755); err != nil {
		return nil, fmt.Errorf("%w: creating lake folder: %w", ErrWrite, err)
	}
	s := opts.Sync
	if s == nil {
		s = (*os.File).Sync
	}
	if opts.MaxOpen <= 0 {
		opts.MaxOpen = 64
	}
	return &Lake{root: opts.Root, replica: opts.Replica, sync: s, maxOpen: opts.MaxOpen, files: map[string]*partFile{}}, nil
}

// Replica returns the replica name of this writer.
func (l *Lake) Replica() string { return l.replica }

// Partition returns the relative path of the file that this replica writes for a row of asset at
// ts (its UTC date). asset must be a valid name (see ValidName).
func (l *Lake) Partition(ts time.Time, asset string) (string, error) {
	return PartitionOf(ts, asset, l.replica)
}

// PartitionOf is Partition for any replica.
func PartitionOf(ts time.Time, asset, replica string) (string, error) {
	if !ValidName(asset) || !ValidName(replica) {
		return "", fmt.Errorf("%w: asset %q / replica %q; want 1-128 of A-Z a-z 0-9 . _ -", ErrInvalidPath, asset, replica)
	}
	return filepath.ToSlash(filepath.Join("date="+ts.UTC().Format(time.DateOnly), "asset="+asset, "part-"+replica+".jsonl")), nil
}

// ValidName reports whether s can be an asset or replica name in a path.
func ValidName(s string) bool { return namePattern.MatchString(s) }

// Write appends row (one JSON object without newline) plus "\n" to the file rel (from Partition)
// and returns after the row is durable (fsynced). Rows written concurrently to one file share one
// fsync. On error the row may be partly on disk; the file is repaired (a newline terminates a
// torn row) when it is reopened.
func (l *Lake) Write(rel string, row []byte) error {
	if strings.ContainsRune(string(row), '\n') {
		return fmt.Errorf("%w: row contains a newline", ErrWrite)
	}
	pf, err := l.file(rel)
	if err != nil {
		return err
	}
	err = pf.append(row)
	l.mu.Lock()
	pf.users--
	l.mu.Unlock()
	if err != nil {
		l.drop(rel, pf)
	}
	return err
}

// Close syncs and closes every open file and makes further Writes fail with ErrClosed. It waits for
// writes in progress. Idempotent.
func (l *Lake) Close() error {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	files := l.files
	l.files = map[string]*partFile{}
	l.mu.Unlock()
	var errs []error
	for _, pf := range files {
		errs = append(errs, pf.close())
	}
	return errors.Join(errs...)
}

func (l *Lake) file(rel string) (*partFile, error) {
	abs, err := l.abs(rel)
	if err != nil {
		return nil, err
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return nil, ErrClosed
	}
	l.tick++
	if pf, ok := l.files[rel]; ok {
		pf.users++
		pf.lastUse = l.tick
		return pf, nil
	}
	if len(l.files) >= l.maxOpen {
		l.evictLocked()
	}
	pf, err := openPartFile(abs, l.sync)
	if err != nil {
		return nil, err
	}
	pf.users, pf.lastUse = 1, l.tick
	l.files[rel] = pf
	return pf, nil
}

// evictLocked closes the least recently used file that no Write is using (none if all are busy).
func (l *Lake) evictLocked() {
	var victim string
	var oldest *partFile
	for rel, pf := range l.files {
		if pf.users == 0 && (oldest == nil || pf.lastUse < oldest.lastUse) {
			victim, oldest = rel, pf
		}
	}
	if oldest != nil {
		delete(l.files, victim)
		_ = oldest.close() // idle: every row in it was synced by the Write that appended it
	}
}

// OpenFiles returns the number of open partition files.
func (l *Lake) OpenFiles() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.files)
}

// drop forgets pf after a failure so that the next Write reopens (and repairs) the file.
func (l *Lake) drop(rel string, pf *partFile) {
	l.mu.Lock()
	if l.files[rel] == pf {
		delete(l.files, rel)
	}
	l.mu.Unlock()
	_ = pf.close()
}

func (l *Lake) abs(rel string) (string, error) {
	clean := filepath.Clean(filepath.FromSlash(rel))
	if rel == "" || filepath.IsAbs(clean) || clean == "." || strings.HasPrefix(clean, "..") || !strings.HasSuffix(clean, ".jsonl") {
		return "", fmt.Errorf("%w: %q; want a relative path to a .jsonl file inside the lake", ErrInvalidPath, rel)
	}
	return filepath.Join(l.root, clean), nil
}
