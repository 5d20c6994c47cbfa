package lake

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
)

// partFile is one open partition file with group commit: rows are appended under mu; the first
// writer that finds no fsync running becomes the leader and syncs everything appended so far; rows
// appended meanwhile wait for the next leader, so one fsync covers many rows.
type partFile struct {
	sync SyncFunc

	users   int    // Writes holding this file; guarded by Lake.mu
	lastUse uint64 // Lake.tick at the last use; guarded by Lake.mu

	mu      sync.Mutex // guards every field below
	cond    *sync.Cond // signalled when synced, syncing or err change
	f       *os.File
	written uint64 // number of rows appended
	synced  uint64 // rows known durable
	syncing bool
	err     error // sticky: set after a failed write or sync; the file is then dropped
	closed  bool
}

func openPartFile(path string, syncFn SyncFunc) (*partFile, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrWrite, err)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrWrite, err)
	}
	if err := repairTail(f); err != nil {
		_ = f.Close()
		return nil, err
	}
	// A new file's directory entry must be durable too, else a crash can lose the whole file.
	if err := syncDir(filepath.Dir(path)); err != nil {
		_ = f.Close()
		return nil, err
	}
	pf := &partFile{f: f, sync: syncFn}
	pf.cond = sync.NewCond(&pf.mu)
	return pf, nil
}

// repairTail terminates a torn last row (a crash in the middle of a write) with a newline, so the
// next row starts on its own line; readers skip the torn line.
func repairTail(f *os.File) error {
	st, err := f.Stat()
	if err != nil {
		return fmt.Errorf("%w: %w", ErrWrite, err)
	}
	if st.Size() == 0 {
		return nil
	}
	last := make([]byte, 1)
	if _, err := f.ReadAt(last, st.Size()-1); err != nil && err != io.EOF {
		return fmt.Errorf("%w: %w", ErrWrite, err)
	}
	if last[0] == '\n' {
		return nil
	}
	if _, err := f.Write([]byte{'\n'}); err != nil {
		return fmt.Errorf("%w: repairing torn row: %w", ErrWrite, err)
	}
	return nil
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrWrite, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("%w: syncing folder: %w", ErrWrite, err)
	}
	return nil
}

// append writes row+"\n" and waits until it is synced (or a write/sync failed).
func (p *partFile) append(row []byte) error {
	line := make([]byte, 0, len(row)+1)
	line = append(append(line, row...), '\n')
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.err != nil {
		return p.err
	}
	if p.closed {
		return ErrClosed
	}
	if _, err := p.f.Write(line); err != nil {
		p.fail(fmt.Errorf("%w: %w", ErrWrite, err))
		return p.err
	}
	p.written++
	mine := p.written
	for p.synced < mine {
		if p.err != nil {
			return p.err
		}
		if p.syncing {
			p.cond.Wait()
			continue
		}
		// Leader: sync everything appended so far, outside the lock so others can append.
		p.syncing = true
		target := p.written
		p.mu.Unlock()
		err := p.sync(p.f)
		p.mu.Lock()
		p.syncing = false
		if err != nil {
			p.fail(fmt.Errorf("%w: fsync: %w", ErrWrite, err))
			return p.err
		}
		p.synced = target
		p.cond.Broadcast()
	}
	return nil
}

// fail records a sticky error and wakes every waiter; called with mu held.
func (p *partFile) fail(err error) {
	if p.err == nil {
		p.err = err
	}
	p.cond.Broadcast()
}

// close waits for a running fsync, syncs what is left and closes the file. Idempotent.
func (p *partFile) close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for p.syncing {
		p.cond.Wait()
	}
	if p.closed {
		return nil
	}
	p.closed = true
	var err error
	if p.err == nil && p.synced < p.written {
		if err = p.sync(p.f); err == nil {
			p.synced = p.written
		}
	}
	if cerr := p.f.Close(); err == nil {
		err = cerr
	}
	if p.err == nil {
		p.err = ErrClosed
	}
	p.cond.Broadcast()
	if err != nil {
		return fmt.Errorf("%w: closing: %w", ErrWrite, err)
	}
	return nil
}
