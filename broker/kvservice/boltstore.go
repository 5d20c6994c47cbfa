package kvservice

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mqdapr/mqdapr/broker/statestore"
	"github.com/mqdapr/mqdapr/internal/hlc"
)

// kvFormatVersion is the format of the key-value file; a file with another version is refused.
const kvFormatVersion = "1"

var (
	bucketKeys = []byte("keys")
	bucketMeta = []byte("meta")
	keyFormat  = []byte("format")
)

// BoltStore persists the key-value store's durable keys in one bbolt file, kv.db: format 1, one
// transaction (two fdatasyncs) per change. LogStore replaces it and migrates its file; it implements
// statestore.Store; the engine calls it under its own lock, one change at a time.
type BoltStore struct {
	db *bolt.DB
}

// storedRecord is the on-disk form of a statestore.Record.
type storedRecord struct {
	Value        []byte `json:"v"`
	Version      string `json:"ts"`
	FencingToken string `json:"ft,omitempty"`
	Fenced       bool   `json:"f,omitempty"`
	ExpiresAt    int64  `json:"exp,omitempty"` // Unix nanoseconds; 0 = no TTL
}

// OpenBoltStore opens (or creates) <dir>/kv.db.
func OpenBoltStore(dir string) (*BoltStore, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("key-value store: %w", err)
	}
	db, err := bolt.Open(filepath.Join(dir, "kv.db"), 0o600, &bolt.Options{Timeout: 5 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("key-value store: open %s: %w", filepath.Join(dir, "kv.db"), err)
	}
	err = db.Update(func(tx *bolt.Tx) error {
		meta, err := tx.CreateBucketIfNotExists(bucketMeta)
		if err != nil {
			return err
		}
		if _, err := tx.CreateBucketIfNotExists(bucketKeys); err != nil {
			return err
		}
		switch v := meta.Get(keyFormat); {
		case v == nil:
			return meta.Put(keyFormat, []byte(kvFormatVersion))
		case string(v) != kvFormatVersion:
			return fmt.Errorf("format %q, this build reads format %q", v, kvFormatVersion)
		}
		return nil
	})
	if err != nil {
		_ = db.Close()
		return nil, fmt.Errorf("key-value store: %w", err)
	}
	return &BoltStore{db: db}, nil
}

// Save inserts or replaces rec; it returns after the change is on disk.
func (s *BoltStore) Save(_ context.Context, rec statestore.Record) error {
	raw, err := encodeRecord(rec)
	if err != nil {
		return err
	}
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketKeys).Put(rec.Key, raw) })
}

// encodeRecord returns the stored form of rec (JSON of storedRecord, without its key).
func encodeRecord(rec statestore.Record) ([]byte, error) {
	sr := storedRecord{Value: rec.Value, Version: rec.Version.String(), Fenced: rec.Fenced}
	if rec.Fenced {
		sr.FencingToken = rec.FencingToken.String()
	}
	if !rec.ExpiresAt.IsZero() {
		sr.ExpiresAt = rec.ExpiresAt.UnixNano()
	}
	return json.Marshal(sr)
}

// decodeRecord reads the record of key k stored as v by encodeRecord.
func decodeRecord(k, v []byte) (statestore.Record, error) {
	var sr storedRecord
	if err := json.Unmarshal(v, &sr); err != nil {
		return statestore.Record{}, fmt.Errorf("key-value store: record %q: %w", k, err)
	}
	rec := statestore.Record{Key: append([]byte(nil), k...), Value: sr.Value, Fenced: sr.Fenced}
	var err error
	if rec.Version, err = hlc.Parse(sr.Version); err != nil {
		return statestore.Record{}, fmt.Errorf("key-value store: record %q version: %w", k, err)
	}
	if sr.Fenced {
		if rec.FencingToken, err = hlc.Parse(sr.FencingToken); err != nil {
			return statestore.Record{}, fmt.Errorf("key-value store: record %q fencing token: %w", k, err)
		}
	}
	if sr.ExpiresAt != 0 {
		rec.ExpiresAt = time.Unix(0, sr.ExpiresAt)
	}
	return rec, nil
}

// Delete removes key; an absent key is not an error.
func (s *BoltStore) Delete(_ context.Context, key []byte) error {
	return s.db.Update(func(tx *bolt.Tx) error { return tx.Bucket(bucketKeys).Delete(key) })
}

// Load calls fn for every stored record.
func (s *BoltStore) Load(_ context.Context, fn func(statestore.Record) error) error {
	return s.db.View(func(tx *bolt.Tx) error {
		return tx.Bucket(bucketKeys).ForEach(func(k, v []byte) error {
			rec, err := decodeRecord(k, v)
			if err != nil {
				return err
			}
			return fn(rec)
		})
	})
}

// Close closes the file.
func (s *BoltStore) Close() error { return s.db.Close() }
