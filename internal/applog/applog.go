// Package applog is a durable append-only log of opaque records, for stores that keep their whole
// state in memory and read it back only when they open (the broker's data directory, the key-value
// store's durable keys).
//
// A file is a header (the caller's magic string, which carries its format version), then records,
// each a little-endian uint32 payload length, the CRC-32C of the payload and the payload. Append
// writes one record and makes it durable with one fdatasync (AppendBatch writes several with one,
// a group commit); the file is extended with written zeros ahead of the records (Prealloc at a time), so that the fdatasync of a record flushes data
// only, not the journal of a size or block change. A record is appended only after the previous one
// is durable, so only the last record can be torn by a crash: reading stops at the first record
// whose length is zero (the preallocated zeros), runs past the end or fails its checksum.
//
// The caller keeps the live state and calls Rewrite with it at open and whenever NeedsRewrite says
// so (after a failed Append, or once the log has doubled since the last rewrite): the live records
// go to a fresh file (path.tmp, synced, renamed over the log, directory synced), which drops a torn
// record and everything superseded. A Log is not safe for concurrent use.
package applog

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io/fs"
	"os"
	"path/filepath"
)

const (
	// Prealloc is how far ahead of its records the log is filled with zeros.
	Prealloc = 4 << 20
	// minRewrite is the smallest log size that makes NeedsRewrite true.
	minRewrite = 16 << 20
	// header is the length and checksum before each payload.
	header = 8
)

// ErrHeader is returned by Open for a file that does not start with the expected magic (another
// format or version, or not a log).
var ErrHeader = errors.New("applog: unexpected file header")

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// Log is an open log file. Create it with Open, then Rewrite it before the first Append.
type Log struct {
	path      string
	magic     string
	f         *os.File
	off       int64 // where the next record goes: the end of the durable records
	size      int64 // the file's size: zeros from off to size
	rewriteAt int64 // log size from which NeedsRewrite is true
	buf       []byte
	// broken is set when a write or sync fails: what reached the file is unknown, so the log must be
	// rewritten from the caller's live state (which holds only what was made durable) first.
	broken bool
}

// Open reads the log at path, calling apply with the payload of each intact record in order (the
// payload is not reused: apply may keep it), and returns a Log to Rewrite. A missing file is an
// empty log (exists false). A file with another header fails with ErrHeader; an error of apply is
// returned as is.
func Open(path, magic string, apply func(payload []byte) error) (l *Log, exists bool, err error) {
	l = &Log{path: path, magic: magic}
	data, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return l, false, nil
	case err != nil:
		return nil, false, fmt.Errorf("applog: read %q: %w", path, err)
	case !bytes.HasPrefix(data, []byte(magic)):
		return nil, true, fmt.Errorf("%w: %q does not start with %q", ErrHeader, path, magic)
	}
	off := len(magic)
	for len(data)-off >= header {
		n := int(binary.LittleEndian.Uint32(data[off:]))
		sum := binary.LittleEndian.Uint32(data[off+4:])
		if n == 0 || n > len(data)-off-header {
			break // the preallocated zeros, or a torn last record
		}
		payload := data[off+header : off+header+n : off+header+n]
		if crc32.Checksum(payload, castagnoli) != sum {
			break // a torn last record
		}
		if err := apply(payload); err != nil {
			return nil, true, err
		}
		off += header + n
	}
	return l, true, nil
}

// NeedsRewrite reports whether the next Append must be preceded by a Rewrite: the log is not open
// yet, an Append failed, or the log has doubled since the last rewrite (16 MiB at least).
func (l *Log) NeedsRewrite() bool { return l.f == nil || l.broken || l.off >= l.rewriteAt }

// Append writes payload as one record after the last one and returns once it is durable. After a
// failure the record may or may not be in the file: NeedsRewrite is then true.
func (l *Log) Append(payload []byte) error { return l.AppendBatch([][]byte{payload}) }

// AppendBatch writes payloads as consecutive records after the last one, with one write and one
// fdatasync for all of them (a group commit), and returns once they are durable. A crash before it
// returns can leave any prefix of them in the file: reading stops at the first torn record, so the
// records of a batch can be lost from the end but are never read out of order. After a failure
// NeedsRewrite is true.
func (l *Log) AppendBatch(payloads [][]byte) error {
	if l.f == nil {
		return fmt.Errorf("applog: %q: append before the first rewrite", l.path)
	}
	l.buf = l.buf[:0]
	for _, p := range payloads {
		l.buf = appendRecord(l.buf, p)
	}
	if err := l.write(l.buf); err != nil {
		l.broken = true
		return err
	}
	if cap(l.buf) > 4<<20 {
		l.buf = nil // a burst's buffer is not kept
	}
	return nil
}

// appendRecord appends payload framed as one record to b.
func appendRecord(b, payload []byte) []byte {
	var h [header]byte
	binary.LittleEndian.PutUint32(h[:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(h[4:], crc32.Checksum(payload, castagnoli))
	return append(append(b, h[:]...), payload...)
}

// write writes rec at l.off, extending the zeros first when it would pass them, and syncs.
func (l *Log) write(rec []byte) error {
	if end := l.off + int64(len(rec)); end > l.size {
		grow := max(Prealloc, end-l.size)
		if _, err := l.f.WriteAt(make([]byte, grow), l.size); err != nil {
			return fmt.Errorf("applog: extend %q: %w", l.path, err)
		}
		l.size += grow
	}
	if _, err := l.f.WriteAt(rec, l.off); err != nil {
		return fmt.Errorf("applog: write %q: %w", l.path, err)
	}
	if err := fdatasync(l.f); err != nil {
		return fmt.Errorf("applog: sync %q: %w", l.path, err)
	}
	l.off += int64(len(rec))
	return nil
}

// Rewrite replaces the log with a fresh file holding the records that live emits (each payload one
// record; emit may be called any number of times), and makes it durable. On failure the old log
// stays in place and NeedsRewrite stays true.
func (l *Log) Rewrite(live func(emit func(payload []byte) error) error) error {
	tmp := l.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("applog: rewrite %q: %w", l.path, err)
	}
	buf := []byte(l.magic)
	off := int64(0)
	err = live(func(payload []byte) error {
		buf = appendRecord(buf, payload)
		_, err := f.WriteAt(buf, off)
		off += int64(len(buf))
		buf = buf[:0]
		return err
	})
	if err == nil {
		_, err = f.WriteAt(append(buf, make([]byte, Prealloc)...), off)
		off += int64(len(buf))
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, l.path)
	}
	if err == nil {
		err = SyncDir(filepath.Dir(l.path))
	}
	if err != nil {
		_ = f.Close()
		_ = os.Remove(tmp)
		l.broken = true // the old file may have been replaced: never append to it again
		return fmt.Errorf("applog: rewrite %q: %w", l.path, err)
	}
	if l.f != nil {
		_ = l.f.Close()
	}
	l.f, l.off, l.size, l.broken = f, off, off+Prealloc, false
	l.rewriteAt = max(minRewrite, 2*off)
	return nil
}

// Size returns the length of the log's header and records (the preallocated zeros not counted).
func (l *Log) Size() int64 { return l.off }

// Remove deletes the file at path (a store's old file once its content is in the log) and makes
// the removal durable, so that a crash cannot bring the file back beside the log.
func Remove(path string) error {
	if err := os.Remove(path); err != nil {
		return fmt.Errorf("applog: remove %q: %w", path, err)
	}
	return SyncDir(filepath.Dir(path))
}

// SyncDir makes a rename or removal in dir durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("applog: sync directory %q: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("applog: sync directory %q: %w", dir, err)
	}
	return nil
}

// Close closes the file; the Log is not usable afterwards.
func (l *Log) Close() error {
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
