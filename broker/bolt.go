package broker

import (
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"
)

// boltTx is bbolt's transaction (named for tests).
type boltTx = bolt.Tx

// formatVersion is the data directory format (the log's, see logName); a directory with another
// version is refused. boltFormatVersion is the format of the bbolt file that came before it, which
// openLog migrates.
const (
	formatVersion     = "2"
	boltFormatVersion = "1"
)

// Bucket names and the format key of the bbolt file.
const (
	bucketMeta     = "meta"
	bucketSessions = "sessions"
	bucketEntries  = "entries"
	bucketRetained = "retained"
	bucketInbound  = "inbound"
	keyFormat      = "format"
)

// boltBackend is the store of format 1: the durable state in one bbolt file, each apply one
// read-write transaction (made durable by two fdatasyncs before Commit returns). openLog reads it
// once to migrate a data directory to the log; nothing writes it otherwise.
type boltBackend struct {
	db *bolt.DB
}

func openBolt(dir string) (*boltBackend, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("broker: data directory %q: %w", dir, err)
	}
	db, err := bolt.Open(filepath.Join(dir, oldBoltName), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("broker: open store in %q: %w", dir, err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		for _, name := range []string{bucketMeta, bucketSessions, bucketEntries, bucketRetained, bucketInbound} {
			if _, err := tx.CreateBucketIfNotExists([]byte(name)); err != nil {
				return err
			}
		}
		meta := tx.Bucket([]byte(bucketMeta))
		switch v := meta.Get([]byte(keyFormat)); {
		case v == nil:
			return meta.Put([]byte(keyFormat), []byte(boltFormatVersion))
		case string(v) != boltFormatVersion:
			return fmt.Errorf("%w: %q in %q, this broker reads %q (bbolt) and %q", ErrDataDirVersion, v, dir, boltFormatVersion, formatVersion)
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, err
	}
	return &boltBackend{db: db}, nil
}

func (s *boltBackend) load() (*snapshot, error) {
	snap := &snapshot{
		sessions: map[string][]byte{},
		entries:  map[string][]storedEntry{},
		retained: map[string][]byte{},
		inbound:  map[string]map[uint16]bool{},
	}
	err := s.db.View(func(tx *bolt.Tx) error {
		if err := tx.Bucket([]byte(bucketSessions)).ForEach(func(k, v []byte) error {
			snap.sessions[string(k)] = append([]byte(nil), v...)
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket([]byte(bucketEntries)).ForEach(func(k, v []byte) error {
			if len(k) < 9 {
				return errCorrupt
			}
			owner := string(k[:len(k)-9])
			seq := binary.BigEndian.Uint64(k[len(k)-8:])
			snap.entries[owner] = append(snap.entries[owner], storedEntry{seq, append([]byte(nil), v...)})
			return nil
		}); err != nil {
			return err
		}
		if err := tx.Bucket([]byte(bucketRetained)).ForEach(func(k, v []byte) error {
			snap.retained[string(k)] = append([]byte(nil), v...)
			return nil
		}); err != nil {
			return err
		}
		return tx.Bucket([]byte(bucketInbound)).ForEach(func(k, _ []byte) error {
			if len(k) < 3 {
				return errCorrupt
			}
			id := string(k[:len(k)-3])
			if snap.inbound[id] == nil {
				snap.inbound[id] = map[uint16]bool{}
			}
			snap.inbound[id][binary.BigEndian.Uint16(k[len(k)-2:])] = true
			return nil
		})
	})
	return snap, err
}

func inboundKey(id string, pid uint16) []byte {
	k := append([]byte(id), 0)
	return binary.BigEndian.AppendUint16(k, pid)
}

func deletePrefix(b *bolt.Bucket, prefix []byte) error {
	c := b.Cursor()
	for k, _ := c.Seek(prefix); k != nil && len(k) >= len(prefix) && string(k[:len(prefix)]) == string(prefix); k, _ = c.Seek(prefix) {
		if err := c.Delete(); err != nil {
			return err
		}
	}
	return nil
}

func (s *boltBackend) apply(ops []op) error {
	return s.db.Update(func(tx *bolt.Tx) error {
		sessions, entries := tx.Bucket([]byte(bucketSessions)), tx.Bucket([]byte(bucketEntries))
		retained, inbound := tx.Bucket([]byte(bucketRetained)), tx.Bucket([]byte(bucketInbound))
		for _, o := range ops {
			var err error
			switch o.kind {
			case opPutSession:
				err = sessions.Put([]byte(o.owner), o.val)
			case opDelSession:
				if err = sessions.Delete([]byte(o.owner)); err == nil {
					if err = deletePrefix(entries, append([]byte{ownerSession}, append([]byte(o.owner), 0)...)); err == nil {
						err = deletePrefix(inbound, append([]byte(o.owner), 0))
					}
				}
			case opPutEntry:
				err = entries.Put(entryKey(o.owner, o.seq), o.val)
			case opDelEntry:
				err = entries.Delete(entryKey(o.owner, o.seq))
			case opPutRetained:
				err = retained.Put([]byte(o.owner), o.val)
			case opDelRetained:
				err = retained.Delete([]byte(o.owner))
			case opPutInbound:
				err = inbound.Put(inboundKey(o.owner, uint16(o.seq)), []byte{})
			case opDelInbound:
				err = inbound.Delete(inboundKey(o.owner, uint16(o.seq)))
			}
			if err != nil {
				return err
			}
		}
		return nil
	})
}

func (s *boltBackend) close() error { return s.db.Close() }
