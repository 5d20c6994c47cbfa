package broker

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

// The data directory's store is one append-only log, mqbroker.log: a header (logMagic, which carries
// the format version), then records, each a little-endian uint32 payload length, the CRC-32C of the
// payload and the payload: one committer transaction's ops, encoded by appendOp. A commit appends one
// record and makes it durable with one fdatasync, where a bbolt transaction takes two (pages, then
// meta page) and rewrites whole 4 KiB pages; the file is extended with written zeros ahead of the
// records, so that fdatasync flushes data only, not the journal of a size or block change.
//
// The broker holds its whole durable state in memory and reads the store only at Start, so a log is
// all it needs: logBackend keeps the live records (live) and rewrites them to a fresh file (written
// to mqbroker.log.tmp, synced, renamed over the log, directory synced) at every open and whenever
// the log has grown past twice its size after the last rewrite. A record is appended only after the
// previous one is durable, so only the last record can be torn by a crash: reading stops at the
// first record whose length is zero (the preallocated zeros), runs past the end or fails its
// checksum, and the rewrite at open drops it.
const (
	logName = "mqbroker.log"
	// oldBoltName is the bbolt file of format 1, migrated into a log at the first open.
	oldBoltName = "mqbroker.db"
	logMagic    = "mqbroker-log\x00" + formatVersion + "\n"
	// logPrealloc is how far ahead of its records the log is filled with zeros.
	logPrealloc = 4 << 20
	// logMinRewrite is the smallest log size that triggers a rewrite.
	logMinRewrite = 16 << 20
	// logChunk bounds the payload of one record written by a rewrite.
	logChunk = 1 << 20
	// recordHeader is the length and checksum before each payload.
	recordHeader = 8
)

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

// liveState is the durable state as the log's records leave it.
type liveState struct {
	sessions map[string][]byte            // client ID -> session record
	entries  map[string]map[uint64][]byte // owner key -> seq -> entry
	retained map[string][]byte            // topic -> message
	inbound  map[string]map[uint16]bool   // client ID -> QoS 2 packet ids awaiting PUBREL
}

func newLiveState() *liveState {
	return &liveState{sessions: map[string][]byte{}, entries: map[string]map[uint64][]byte{},
		retained: map[string][]byte{}, inbound: map[string]map[uint16]bool{}}
}

// apply changes the state as one op does; values are kept, not copied (the committer's ops are not
// modified after submit).
func (s *liveState) apply(o *op) {
	switch o.kind {
	case opPutSession:
		s.sessions[o.owner] = o.val
	case opDelSession:
		delete(s.sessions, o.owner)
		delete(s.entries, string(ownerSession)+o.owner)
		delete(s.inbound, o.owner)
	case opPutEntry:
		m := s.entries[o.owner]
		if m == nil {
			m = map[uint64][]byte{}
			s.entries[o.owner] = m
		}
		m[o.seq] = o.val
	case opDelEntry:
		if m := s.entries[o.owner]; m != nil {
			delete(m, o.seq)
			if len(m) == 0 {
				delete(s.entries, o.owner)
			}
		}
	case opPutRetained:
		s.retained[o.owner] = o.val
	case opDelRetained:
		delete(s.retained, o.owner)
	case opPutInbound:
		m := s.inbound[o.owner]
		if m == nil {
			m = map[uint16]bool{}
			s.inbound[o.owner] = m
		}
		m[uint16(o.seq)] = true
	case opDelInbound:
		if m := s.inbound[o.owner]; m != nil {
			delete(m, uint16(o.seq))
			if len(m) == 0 {
				delete(s.inbound, o.owner)
			}
		}
	}
}

// ops calls fn with the state as put ops, in batches of about logChunk bytes.
func (s *liveState) ops(fn func([]op) error) error {
	var batch []op
	size := 0
	add := func(o op) error {
		batch = append(batch, o)
		if size += len(o.owner) + len(o.val) + 16; size < logChunk {
			return nil
		}
		err := fn(batch)
		batch, size = batch[:0], 0
		return err
	}
	for id, v := range s.sessions {
		if err := add(op{kind: opPutSession, owner: id, val: v}); err != nil {
			return err
		}
	}
	for id, pids := range s.inbound {
		for pid := range pids {
			if err := add(op{kind: opPutInbound, owner: id, seq: uint64(pid)}); err != nil {
				return err
			}
		}
	}
	for topic, v := range s.retained {
		if err := add(op{kind: opPutRetained, owner: topic, val: v}); err != nil {
			return err
		}
	}
	for owner, m := range s.entries {
		for seq, v := range m {
			if err := add(op{kind: opPutEntry, owner: owner, seq: seq, val: v}); err != nil {
				return err
			}
		}
	}
	if len(batch) == 0 {
		return nil
	}
	return fn(batch)
}

// appendOp appends the encoding of o: kind, then owner, seq and val as uvarint-prefixed fields.
func appendOp(b []byte, o *op) []byte {
	b = append(b, byte(o.kind))
	b = binary.AppendUvarint(b, uint64(len(o.owner)))
	b = append(b, o.owner...)
	b = binary.AppendUvarint(b, o.seq)
	b = binary.AppendUvarint(b, uint64(len(o.val)))
	return append(b, o.val...)
}

// appendRecord appends one record holding ops.
func appendRecord(b []byte, ops []op) []byte {
	start := len(b)
	b = append(b, make([]byte, recordHeader)...)
	for i := range ops {
		b = appendOp(b, &ops[i])
	}
	payload := b[start+recordHeader:]
	binary.LittleEndian.PutUint32(b[start:], uint32(len(payload)))
	binary.LittleEndian.PutUint32(b[start+4:], crc32.Checksum(payload, castagnoli))
	return b
}

// decodeOps applies the ops of one payload to s; the values alias payload.
func decodeOps(payload []byte, s *liveState) error {
	for len(payload) > 0 {
		var o op
		o.kind = opKind(payload[0])
		if o.kind < opPutSession || o.kind > opDelInbound {
			return fmt.Errorf("%w: op kind %d", errCorrupt, o.kind)
		}
		payload = payload[1:]
		n, k := binary.Uvarint(payload)
		if k <= 0 || n > uint64(len(payload)-k) {
			return fmt.Errorf("%w: op owner", errCorrupt)
		}
		o.owner, payload = string(payload[k:k+int(n)]), payload[k+int(n):]
		if o.seq, k = binary.Uvarint(payload); k <= 0 {
			return fmt.Errorf("%w: op sequence", errCorrupt)
		}
		payload = payload[k:]
		n, k = binary.Uvarint(payload)
		if k <= 0 || n > uint64(len(payload)-k) {
			return fmt.Errorf("%w: op value", errCorrupt)
		}
		o.val, payload = payload[k:k+int(n):k+int(n)], payload[k+int(n):]
		s.apply(&o)
	}
	return nil
}

// replay applies the records of a log file's contents to s and returns where the intact records
// end.
func replay(data []byte, s *liveState) (int64, error) {
	off := len(logMagic)
	for len(data)-off >= recordHeader {
		n := int(binary.LittleEndian.Uint32(data[off:]))
		sum := binary.LittleEndian.Uint32(data[off+4:])
		if n == 0 || n > len(data)-off-recordHeader {
			break // the preallocated zeros, or a torn last record
		}
		payload := data[off+recordHeader : off+recordHeader+n]
		if crc32.Checksum(payload, castagnoli) != sum {
			break // a torn last record
		}
		if err := decodeOps(payload, s); err != nil {
			return 0, fmt.Errorf("record at offset %d: %w", off, err)
		}
		off += recordHeader + n
	}
	return int64(off), nil
}

// logBackend is the append-only log store (see logName). apply is called by the committer alone.
type logBackend struct {
	dir       string
	f         *os.File
	off       int64 // where the next record goes: the end of the durable records
	size      int64 // the file's size: zeros from off to size
	rewriteAt int64 // log size that triggers the next rewrite
	live      *liveState
	buf       []byte
	// broken is set when a write or sync fails: what reached the file is unknown, so the next apply
	// rewrites the log from live (which holds only the records that were made durable) first.
	broken bool
}

// openLog opens the log store of dir: it reads mqbroker.log, or migrates the bbolt file of format 1
// (mqbroker.db, removed once the log holding its state is durable), and rewrites the log. A log of
// another format fails with ErrDataDirVersion.
func openLog(dir string) (*logBackend, error) {
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return nil, fmt.Errorf("broker: data directory %q: %w", dir, err)
	}
	l := &logBackend{dir: dir, live: newLiveState()}
	path := filepath.Join(dir, logName)
	data, err := os.ReadFile(path)
	migrate := false
	switch {
	case errors.Is(err, fs.ErrNotExist):
		if migrate, err = l.loadBolt(); err != nil {
			return nil, err
		}
	case err != nil:
		return nil, fmt.Errorf("broker: read store %q: %w", path, err)
	case !bytes.HasPrefix(data, []byte(logMagic)):
		return nil, fmt.Errorf("%w: %q does not start with the header of format %q (%q)", ErrDataDirVersion, path, formatVersion, logMagic)
	default:
		if _, err := replay(data, l.live); err != nil {
			return nil, fmt.Errorf("broker: load store %q: %w", path, err)
		}
	}
	if err := l.rewrite(); err != nil {
		return nil, err
	}
	if migrate {
		if err := os.Remove(filepath.Join(dir, oldBoltName)); err != nil {
			_ = l.close()
			return nil, fmt.Errorf("broker: remove the migrated %q: %w", oldBoltName, err)
		}
		if err := syncDir(dir); err != nil {
			_ = l.close()
			return nil, err
		}
	}
	return l, nil
}

// loadBolt reads the state of a format 1 data directory (bbolt) into l.live; false when there is
// none.
func (l *logBackend) loadBolt() (bool, error) {
	if _, err := os.Stat(filepath.Join(l.dir, oldBoltName)); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	bb, err := openBolt(l.dir)
	if err != nil {
		return false, err
	}
	defer bb.close()
	snap, err := bb.load()
	if err != nil {
		return false, fmt.Errorf("broker: migrate %q: %w", oldBoltName, err)
	}
	for id, v := range snap.sessions {
		l.live.apply(&op{kind: opPutSession, owner: id, val: v})
	}
	for owner, list := range snap.entries {
		for _, e := range list {
			l.live.apply(&op{kind: opPutEntry, owner: owner, seq: e.seq, val: e.val})
		}
	}
	for topic, v := range snap.retained {
		l.live.apply(&op{kind: opPutRetained, owner: topic, val: v})
	}
	for id, pids := range snap.inbound {
		for pid := range pids {
			l.live.apply(&op{kind: opPutInbound, owner: id, seq: uint64(pid)})
		}
	}
	return true, nil
}

func (l *logBackend) load() (*snapshot, error) {
	snap := &snapshot{sessions: l.live.sessions, retained: l.live.retained, inbound: l.live.inbound,
		entries: map[string][]storedEntry{}}
	for owner, m := range l.live.entries {
		list := make([]storedEntry, 0, len(m))
		for seq, v := range m {
			list = append(list, storedEntry{seq, v})
		}
		snap.entries[owner] = list // restore sorts them
	}
	return snap, nil
}

// apply appends ops as one record and makes it durable (one fdatasync).
func (l *logBackend) apply(ops []op) error {
	if l.broken || l.off >= l.rewriteAt {
		if err := l.rewrite(); err != nil {
			return err
		}
	}
	l.buf = appendRecord(l.buf[:0], ops)
	if err := l.write(l.buf); err != nil {
		l.broken = true
		return err
	}
	for i := range ops {
		l.live.apply(&ops[i])
	}
	if cap(l.buf) > 4*logChunk {
		l.buf = nil // a burst's buffer is not kept
	}
	return nil
}

// write writes rec at l.off, extending the zeros first when it would pass them, and syncs.
func (l *logBackend) write(rec []byte) error {
	if end := l.off + int64(len(rec)); end > l.size {
		grow := max(logPrealloc, end-l.size)
		if _, err := l.f.WriteAt(make([]byte, grow), l.size); err != nil {
			return fmt.Errorf("broker: extend store: %w", err)
		}
		l.size += grow
	}
	if _, err := l.f.WriteAt(rec, l.off); err != nil {
		return fmt.Errorf("broker: write store: %w", err)
	}
	if err := fdatasync(l.f); err != nil {
		return fmt.Errorf("broker: sync store: %w", err)
	}
	l.off += int64(len(rec))
	return nil
}

// rewrite writes the live state to a fresh log and puts it in place of the old one.
func (l *logBackend) rewrite() error {
	path := filepath.Join(l.dir, logName)
	tmp := path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_RDWR|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("broker: rewrite store: %w", err)
	}
	buf := []byte(logMagic)
	off := int64(0)
	err = l.live.ops(func(ops []op) error {
		buf = appendRecord(buf, ops)
		_, err := f.WriteAt(buf, off)
		off += int64(len(buf))
		buf = buf[:0]
		return err
	})
	if err == nil {
		_, err = f.WriteAt(append(buf, make([]byte, logPrealloc)...), off)
		off += int64(len(buf))
	}
	if err == nil {
		err = f.Sync()
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err == nil {
		err = syncDir(l.dir)
	}
	if err != nil {
		_ = f.Close()
		return fmt.Errorf("broker: rewrite store %q: %w", path, err)
	}
	if l.f != nil {
		_ = l.f.Close()
	}
	l.f, l.off, l.size, l.broken = f, off, off+logPrealloc, false
	l.rewriteAt = max(logMinRewrite, 2*off)
	return nil
}

// syncDir makes a rename or removal in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("broker: sync data directory: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("broker: sync data directory: %w", err)
	}
	return nil
}

func (l *logBackend) close() error {
	if l.f == nil {
		return nil
	}
	err := l.f.Close()
	l.f = nil
	return err
}
