package broker

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/mqdapr/mqdapr/internal/applog"
)

// The data directory's store is one append-only log, mqbroker.log (internal/applog): one record per
// committer transaction, its ops encoded by appendOp, made durable by one fdatasync, where a bbolt
// transaction takes two (pages, then meta page) and rewrites whole 4 KiB pages for a few small
// records. The broker holds its whole durable state in memory and reads the store only at Start, so
// a log is all it needs: logBackend keeps the live records (live) and rewrites the log from them at
// every open and whenever the log asks for it (applog.Log.NeedsRewrite).
const (
	logName = "mqbroker.log"
	// oldBoltName is the bbolt file of format 1, migrated into a log at the first open.
	oldBoltName = "mqbroker.db"
	logMagic    = "mqbroker-log\x00" + formatVersion + "\n"
	// logChunk bounds the payload of one record written by a rewrite.
	logChunk = 1 << 20
)

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

// decodeOps applies the ops of one payload to s.
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
		o.val, payload = bytes.Clone(payload[k:k+int(n)]), payload[k+int(n):] // not the file read at open
		s.apply(&o)
	}
	return nil
}

// logBackend is the append-only log store (see logName). apply is called by the committer alone.
type logBackend struct {
	dir  string
	log  *applog.Log
	live *liveState
	buf  []byte
}

// openLog opens the log store of dir: it reads mqbroker.log, or migrates the bbolt file of format 1
// (mqbroker.db, removed once the log holding its state is durable; one found beside a log was left
// by a migration cut short after the log was in place, and is removed too), and rewrites the log.
// A log of another format fails with ErrDataDirVersion.
func openLog(dir string) (*logBackend, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("broker: data directory %q: %w", dir, err)
	}
	l := &logBackend{dir: dir, live: newLiveState()}
	path := filepath.Join(dir, logName)
	lg, exists, err := applog.Open(path, logMagic, func(payload []byte) error { return decodeOps(payload, l.live) })
	switch {
	case errors.Is(err, applog.ErrHeader):
		return nil, fmt.Errorf("%w: %w (format %q)", ErrDataDirVersion, err, formatVersion)
	case err != nil:
		return nil, fmt.Errorf("broker: load store: %w", err)
	}
	l.log = lg
	migrate := exists && fileExists(filepath.Join(dir, oldBoltName)) // a migration cut short after its rename
	if !exists {
		if migrate, err = l.loadBolt(); err != nil {
			return nil, err
		}
	}
	if err := l.rewrite(); err != nil {
		return nil, err
	}
	if migrate {
		if err := applog.Remove(filepath.Join(dir, oldBoltName)); err != nil {
			_ = l.close()
			return nil, fmt.Errorf("broker: the migrated %q: %w", oldBoltName, err)
		}
	}
	return l, nil
}

// loadBolt reads the state of a format 1 data directory (bbolt) into l.live; false when there is
// none.
func (l *logBackend) loadBolt() (bool, error) {
	if !fileExists(filepath.Join(l.dir, oldBoltName)) {
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

// load returns the state read at open; its maps are the live state's own (restore only reads them,
// before the committer starts).
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

// apply appends ops as one record and makes it durable (one fdatasync), rewriting the log first when
// it asks for it.
func (l *logBackend) apply(ops []op) error {
	if l.log.NeedsRewrite() {
		if err := l.rewrite(); err != nil {
			return err
		}
	}
	l.buf = l.buf[:0]
	for i := range ops {
		l.buf = appendOp(l.buf, &ops[i])
	}
	if err := l.log.Append(l.buf); err != nil {
		return fmt.Errorf("broker: store: %w", err)
	}
	for i := range ops {
		l.live.apply(&ops[i])
	}
	if cap(l.buf) > 4*logChunk {
		l.buf = nil // a burst's buffer is not kept
	}
	return nil
}

// rewrite writes the live state to a fresh log in place of the old one.
func (l *logBackend) rewrite() error {
	var buf []byte
	err := l.log.Rewrite(func(emit func([]byte) error) error {
		return l.live.ops(func(ops []op) error {
			buf = buf[:0]
			for i := range ops {
				buf = appendOp(buf, &ops[i])
			}
			return emit(buf)
		})
	})
	if err != nil {
		return fmt.Errorf("broker: store: %w", err)
	}
	return nil
}

func (l *logBackend) close() error { return l.log.Close() }

// fileExists reports whether path names a file (an error other than its absence counts as present,
// so that opening it reports the error).
func fileExists(path string) bool {
	_, err := os.Stat(path)
	return !errors.Is(err, fs.ErrNotExist)
}
