package kvservice

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"sync/atomic"

	"github.com/mqdapr/mqdapr/broker/statestore"
	"github.com/mqdapr/mqdapr/internal/applog"
)

// The key-value file of format 2 is an append-only log (internal/applog), kv.log: a change is one
// record, and the changes of one Apply (a group commit of the engine) are made durable by one
// fdatasync before it returns, where a bbolt transaction (format 1, kv.db) takes two and rewrites
// whole pages. The engine holds every key in memory and
// reads the store only at Load, so a log is all it needs.
const (
	kvLogName    = "kv.log"
	kvBoltName   = "kv.db"
	kvLogMagic   = "mqbroker-kv-log\x00" + "2\n"
	recordSave   = 's' // key, then the record as encodeRecord stores it
	recordDelete = 'd' // key
)

// LogStore persists the key-value store's durable keys in an append-only log. It implements
// statestore.BatchStore: the engine hands it the changes of many requests at once (Apply), which
// cost one write and one fdatasync together. The engine makes one call at a time, so it is not
// safe for concurrent use.
type LogStore struct {
	dir     string
	log     *applog.Log
	live    map[string][]byte // key -> stored record (encodeRecord); only what is durable
	buf     []byte
	commits atomic.Int64 // log appends (each one fdatasync) made by Save, Delete and Apply
}

// OpenLogStore opens (or creates) <dir>/kv.log; a kv.db of format 1 (BoltStore) found there
// instead is migrated into it and removed once the log is durable.
func OpenLogStore(dir string) (*LogStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("key-value store: %w", err)
	}
	s := &LogStore{dir: dir, live: map[string][]byte{}}
	lg, exists, err := applog.Open(filepath.Join(dir, kvLogName), kvLogMagic, s.replay)
	if err != nil {
		return nil, fmt.Errorf("key-value store: %w", err)
	}
	s.log = lg
	// A kv.db beside a log was left by a migration cut short after the log was in place.
	_, statErr := os.Stat(filepath.Join(dir, kvBoltName))
	migrated := exists && !errors.Is(statErr, fs.ErrNotExist)
	if !exists {
		if migrated, err = s.loadBolt(); err != nil {
			return nil, err
		}
	}
	if err := s.rewrite(); err != nil {
		return nil, err
	}
	if migrated {
		if err := applog.Remove(filepath.Join(dir, kvBoltName)); err != nil {
			_ = s.Close()
			return nil, fmt.Errorf("key-value store: the migrated %s: %w", kvBoltName, err)
		}
	}
	return s, nil
}

// replay applies one record of the log to s.live.
func (s *LogStore) replay(payload []byte) error {
	if len(payload) == 0 || (payload[0] != recordSave && payload[0] != recordDelete) {
		return fmt.Errorf("key-value store: %w: record kind", errCorruptLog)
	}
	n, k := binary.Uvarint(payload[1:])
	if k <= 0 || n > uint64(len(payload)-1-k) {
		return fmt.Errorf("key-value store: %w: key length", errCorruptLog)
	}
	key, rest := string(payload[1+k:1+k+int(n)]), payload[1+k+int(n):]
	if payload[0] == recordDelete {
		delete(s.live, key)
		return nil
	}
	s.live[key] = bytes.Clone(rest) // not the file read at open
	return nil
}

// loadBolt reads the records of a kv.db of format 1 into s.live; false when there is none.
func (s *LogStore) loadBolt() (bool, error) {
	if _, err := os.Stat(filepath.Join(s.dir, kvBoltName)); errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	bs, err := OpenBoltStore(s.dir)
	if err != nil {
		return false, err
	}
	defer bs.Close()
	err = bs.Load(context.Background(), func(rec statestore.Record) error {
		raw, err := encodeRecord(rec)
		s.live[string(rec.Key)] = raw
		return err
	})
	if err != nil {
		return false, fmt.Errorf("key-value store: migrate %s: %w", kvBoltName, err)
	}
	return true, nil
}

// appendRecord appends the record of one change: kind, key, then for a save the stored record.
func appendRecord(b []byte, kind byte, key string, raw []byte) []byte {
	b = append(b, kind)
	b = binary.AppendUvarint(b, uint64(len(key)))
	b = append(b, key...)
	return append(b, raw...)
}

// rewrite writes the live keys to a fresh log, one save record each.
func (s *LogStore) rewrite() error {
	err := s.log.Rewrite(func(emit func([]byte) error) error {
		var buf []byte
		for key, raw := range s.live {
			buf = appendRecord(buf[:0], recordSave, key, raw)
			if err := emit(buf); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("key-value store: %w", err)
	}
	return nil
}

// Save inserts or replaces rec; it returns after the change is on disk.
func (s *LogStore) Save(_ context.Context, rec statestore.Record) error {
	raw, err := encodeRecord(rec)
	if err != nil {
		return err
	}
	if err := s.append(recordSave, string(rec.Key), raw); err != nil {
		return err
	}
	s.live[string(rec.Key)] = raw
	return nil
}

// Delete removes key; an absent key is not an error (and costs no write).
func (s *LogStore) Delete(_ context.Context, key []byte) error {
	if _, ok := s.live[string(key)]; !ok {
		return nil
	}
	if err := s.append(recordDelete, string(key), nil); err != nil {
		return err
	}
	delete(s.live, string(key))
	return nil
}

// append makes one change durable, rewriting the log first when it asks for it.
func (s *LogStore) append(kind byte, key string, raw []byte) error {
	s.buf = appendRecord(s.buf[:0], kind, key, raw)
	return s.appendBatch([][]byte{s.buf})
}

// appendBatch makes records durable with one append, rewriting the log first when it asks for it.
func (s *LogStore) appendBatch(records [][]byte) error {
	if s.log.NeedsRewrite() {
		if err := s.rewrite(); err != nil {
			return err
		}
	}
	s.commits.Add(1)
	if err := s.log.AppendBatch(records); err != nil {
		return fmt.Errorf("key-value store: %w", err)
	}
	return nil
}

// Apply makes changes durable, in order, with one log append and one fdatasync, and returns once
// they are. On error none of them is applied to the live keys, and the next append rewrites the
// log from them first: a change whose request was answered with a failure is not kept (unless the
// broker crashes before that rewrite, when it may or may not be read back, as for a failed Save).
func (s *LogStore) Apply(_ context.Context, changes []statestore.Change) error {
	records := make([][]byte, 0, len(changes))
	raws := make([][]byte, len(changes))
	for i, c := range changes {
		key := string(c.Record.Key)
		if c.Delete {
			records = append(records, appendRecord(nil, recordDelete, key, nil))
			continue
		}
		raw, err := encodeRecord(c.Record)
		if err != nil {
			return err
		}
		raws[i] = raw
		records = append(records, appendRecord(nil, recordSave, key, raw))
	}
	if err := s.appendBatch(records); err != nil {
		return err
	}
	for i, c := range changes {
		if c.Delete {
			delete(s.live, string(c.Record.Key))
		} else {
			s.live[string(c.Record.Key)] = raws[i]
		}
	}
	return nil
}

// Commits returns how many log appends (one fdatasync each) the store has made since it opened.
func (s *LogStore) Commits() int64 { return s.commits.Load() }

// Load calls fn for every stored record, in key order.
func (s *LogStore) Load(_ context.Context, fn func(statestore.Record) error) error {
	keys := make([]string, 0, len(s.live))
	for k := range s.live {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		rec, err := decodeRecord([]byte(k), s.live[k])
		if err != nil {
			return err
		}
		if err := fn(rec); err != nil {
			return err
		}
	}
	return nil
}

// Close closes the file.
func (s *LogStore) Close() error { return s.log.Close() }
