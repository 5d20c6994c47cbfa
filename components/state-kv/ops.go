package statekv

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/dapr/components-contrib/state"
)

// mdTTL is the per-request metadata key of a TTL in seconds (-1: no expiry).
const mdTTL = "ttlInSeconds"

// Get reads a key. A missing key is a response with no data and no ETag. The ETag is the key's
// version (`__ts`).
func (s *Store) Get(ctx context.Context, req *state.GetRequest) (*state.GetResponse, error) {
	r, md, err := s.state()
	if err != nil {
		return nil, err
	}
	if err := checkKey(req.Key, md); err != nil {
		return nil, err
	}
	value, version, found, err := r.get(ctx, req.Key)
	if err != nil || !found {
		return &state.GetResponse{}, err
	}
	return &state.GetResponse{Data: value, ETag: &version}, nil
}

// Set writes a key. With a non-empty ETag it is a compare-and-set (see casSet); with first-write
// concurrency and no ETag it succeeds only if the key is absent (NX), else it returns an ETag
// mismatch error; otherwise the last write wins. ttlInSeconds sets the key's expiry (PX); a write
// without it clears any earlier expiry.
func (s *Store) Set(ctx context.Context, req *state.SetRequest) error {
	r, md, err := s.state()
	if err != nil {
		return err
	}
	if err := checkKey(req.Key, md); err != nil {
		return err
	}
	value, err := marshal(req.Key, req.Value, md)
	if err != nil {
		return err
	}
	ttl, err := parseTTL(req.Metadata)
	if err != nil {
		return err
	}
	if req.HasETag() {
		return s.casSet(ctx, r, md, req.Key, value, ttl, *req.ETag)
	}
	if req.Options.Concurrency == state.FirstWrite {
		res, err := r.set(ctx, req.Key, value, nx, ttl, nil, true)
		switch {
		case err != nil:
			return err
		case !res.applied: // :-1, or the fencing refusal of an existing fenced key
			return state.NewETagError(state.ETagMismatch, fmt.Errorf("first-write of key %q: the key already exists", req.Key))
		}
		return nil
	}
	return s.lastWriteSet(ctx, r, md, req.Key, value, ttl)
}

// lastWriteSet sets without condition. It sends the plain SET first (one round trip, the case of
// keys never written with an ETag); if the key is fenced (an ETag write or a locked write has been
// there) the store refuses it and the write goes through the key's lease lock (lockedSet), so that
// it cannot land between an ETag writer's read and write (DESIGN.md).
func (s *Store) lastWriteSet(ctx context.Context, r *rpc, md Metadata, key string, value []byte, ttl time.Duration) error {
	res, err := r.set(ctx, key, value, always, ttl, nil, true)
	switch {
	case err != nil:
		return err
	case res.applied:
		return nil
	case res.fenced == "":
		return fmt.Errorf("%w: unconditional SET %q was not applied", ErrUnexpectedResponse, key)
	}
	return s.lockedSet(ctx, r, md, key, value, ttl)
}

// Delete removes a key. With a non-empty ETag it deletes only the version the ETag names (else an
// ETag mismatch error, also when the key is absent); without one, deleting an absent key succeeds.
// A delete without an ETag takes the key's lease lock (ErrLockTimeout, ErrLeaseExpired possible).
func (s *Store) Delete(ctx context.Context, req *state.DeleteRequest) error {
	r, md, err := s.state()
	if err != nil {
		return err
	}
	if err := checkKey(req.Key, md); err != nil {
		return err
	}
	if req.HasETag() {
		return s.casDelete(ctx, r, md, req.Key, *req.ETag)
	}
	return s.lockedDelete(ctx, r, md, req.Key)
}

// checkKey refuses empty keys and keys that would collide with a lock key.
func checkKey(key string, md Metadata) error {
	if key == "" {
		return fmt.Errorf("%w: the key is empty; want a non-empty key", ErrInvalidKey)
	}
	if strings.HasSuffix(key, md.LockSuffix) {
		return fmt.Errorf("%w: key %q ends with the lock suffix %q reserved for ETag locks (lockSuffix metadata)", ErrInvalidKey, key, md.LockSuffix)
	}
	return nil
}

// marshal turns a request value into bytes: []byte as is, anything else as JSON (as contrib's state
// stores do), within maxValueBytes.
func marshal(key string, v any, md Metadata) ([]byte, error) {
	b, ok := v.([]byte)
	if !ok {
		var err error
		if b, err = json.Marshal(v); err != nil {
			return nil, fmt.Errorf("%w: key %q: the value cannot be marshalled to JSON: %w", ErrInvalidValue, key, err)
		}
	}
	if md.MaxValueBytes > 0 && len(b) > md.MaxValueBytes {
		return nil, fmt.Errorf("%w: key %q: the value is %d bytes; maxValueBytes allows %d", ErrInvalidValue, key, len(b), md.MaxValueBytes)
	}
	return b, nil
}

// parseTTL reads ttlInSeconds: absent, -1 or 0 mean no expiry; a positive number of seconds maps to
// PX.
func parseTTL(meta map[string]string) (time.Duration, error) {
	raw, ok := meta[mdTTL]
	if !ok || raw == "" {
		return 0, nil
	}
	n, err := strconv.ParseInt(strings.TrimSpace(raw), 10, 32)
	if err != nil || n < -1 {
		return 0, fmt.Errorf("%w: %s=%q: want -1 (no expiry) or a whole number of seconds from 0 to %d", ErrInvalidMetadata, mdTTL, raw, int32(^uint32(0)>>1))
	}
	if n <= 0 {
		return 0, nil
	}
	return time.Duration(n) * time.Second, nil
}
