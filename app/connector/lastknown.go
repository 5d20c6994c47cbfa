package connector

import (
	"context"
	"encoding/json"
	"maps"
	"sync"
	"time"

	"github.com/mqdapr/mqdapr/app/kv"
	"github.com/mqdapr/mqdapr/app/telemetry"
)

// lastKnown is the value of "last/<deviceId>": the newest reading's metrics merged over older
// ones (a metric not sent in a reading keeps its last value).
type lastKnown struct {
	Seq     int64                       `json:"seq"`
	TS      time.Time                   `json:"ts"`
	Metrics map[string]telemetry.Metric `json:"metrics"`
}

// merged returns lk with r merged over it, or lk itself when r is older (a late reading never
// moves the values back). lk may be nil.
func (lk *lastKnown) merged(r *telemetry.Reading) *lastKnown {
	if lk != nil && r.TS.Before(lk.TS) {
		return lk
	}
	next := &lastKnown{Seq: r.Seq, TS: r.TS, Metrics: map[string]telemetry.Metric{}}
	if lk != nil {
		maps.Copy(next.Metrics, lk.Metrics)
	}
	maps.Copy(next.Metrics, r.Metrics)
	return next
}

// lastLoadTimeout bounds the one state store read of a device's values that a delivery may wait
// for (the first reading of a device on this replica): the values are context, and a slow or dead
// state store must not hold the stream for them.
const lastLoadTimeout = 500 * time.Millisecond

// lastWriteInterval spaces the store writes of one device's values: readings that arrive
// meanwhile are merged and written together, so the values cost the state store one write per
// device per interval instead of a read and a write per reading.
const lastWriteInterval = time.Second

// lastValues keeps the last-known values off the ack path: a cache per device answers the rows'
// "previous" (read from the store once per device, with lastLoadTimeout), each written row updates
// the cache at once, and a background writer per device merges the newest values into the store
// (so replicas sharing a device merge, and the cache learns theirs). Best effort
// throughout: a failure is logged and costs only context, never a row or an ack.
type lastValues struct {
	store kv.Store
	log   func(msg string, args ...any)

	mu      sync.Mutex // guards every field below
	cache   map[string]*lastKnown
	pending map[string]*telemetry.Reading // device → readings merged, waiting for the writer
	writing map[string]bool               // a writer runs for the device
	idle    chan struct{}                 // closed (and replaced) when no writer runs
	writers int
	hurry   chan struct{} // closed by flush: writers stop spacing their writes
	// writeTimeout bounds each background write of a device's values (read and write).
	writeTimeout time.Duration
}

func newLastValues(store kv.Store, log func(string, ...any)) *lastValues {
	lv := &lastValues{store: store, log: log, cache: map[string]*lastKnown{},
		pending: map[string]*telemetry.Reading{}, writing: map[string]bool{}, idle: make(chan struct{}), hurry: make(chan struct{}),
		writeTimeout: 10 * time.Second}
	close(lv.idle)
	return lv
}

// get returns the device's last-known values before this reading (nil when none are known or the
// store did not answer in time).
func (lv *lastValues) get(ctx context.Context, device string) *lastKnown {
	lv.mu.Lock()
	lk, ok := lv.cache[device]
	lv.mu.Unlock()
	if ok {
		return lk
	}
	ctx, cancel := context.WithTimeout(ctx, lastLoadTimeout)
	defer cancel()
	lk, _, err := lv.load(ctx, device)
	if err != nil {
		lv.log("last-known values not read; the row goes without them", "device", device, "err", err)
		return nil
	}
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if cur, ok := lv.cache[device]; ok { // a row written meanwhile is newer
		return cur
	}
	lv.cache[device] = lk
	return lk
}

func (lv *lastValues) load(ctx context.Context, device string) (*lastKnown, string, error) {
	v, etag, found, err := lv.store.Get(ctx, lastKey(device))
	if err != nil || !found {
		return nil, "", err
	}
	var lk lastKnown
	if err := json.Unmarshal(v, &lk); err != nil {
		lv.log("malformed last-known values ignored", "device", device, "err", err)
		return nil, etag, nil
	}
	return &lk, etag, nil
}

// written records r (its row is durable): the cache now, the store in the background.
func (lv *lastValues) written(r *telemetry.Reading) {
	lv.mu.Lock()
	defer lv.mu.Unlock()
	lv.cache[r.DeviceID] = lv.cache[r.DeviceID].merged(r)
	if p := lv.pending[r.DeviceID]; p == nil || !r.TS.Before(p.TS) {
		if p != nil { // keep metrics the newer reading did not send
			merged := *r
			merged.Metrics = maps.Clone(p.Metrics)
			maps.Copy(merged.Metrics, r.Metrics)
			r = &merged
		}
		lv.pending[r.DeviceID] = r
	}
	if !lv.writing[r.DeviceID] {
		lv.writing[r.DeviceID] = true
		if lv.writers == 0 {
			lv.idle = make(chan struct{})
		}
		lv.writers++
		go lv.write(r.DeviceID)
	}
}

// write stores the device's pending values, at most once per lastWriteInterval, until none are
// left, then ends.
func (lv *lastValues) write(device string) {
	for first := true; ; first = false {
		if !first {
			t := time.NewTimer(lastWriteInterval)
			select {
			case <-t.C:
			case <-lv.hurry:
			}
			t.Stop()
		}
		lv.mu.Lock()
		r := lv.pending[device]
		delete(lv.pending, device)
		if r == nil {
			delete(lv.writing, device)
			lv.writers--
			if lv.writers == 0 {
				close(lv.idle)
			}
			lv.mu.Unlock()
			return
		}
		lv.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), lv.writeTimeout)
		lv.store1(ctx, r)
		cancel()
	}
}

// store1 merges r into the stored values (read first, so that values of other replicas are
// kept and a late older reading does not move them back) and caches the result. The write is
// last-write-wins, not an ETag write: on state.mqttkv an ETag write takes the key's lease lock
// (three more broker operations), and the values are context, so two replicas updating one
// device in the same instant may lose one's metrics until its next write (a second later).
func (lv *lastValues) store1(ctx context.Context, r *telemetry.Reading) {
	last, _, err := lv.load(ctx, r.DeviceID)
	if err != nil {
		lv.log("last-known values not updated", "device", r.DeviceID, "err", err)
		return
	}
	next := last.merged(r)
	if next != last {
		data, _ := json.Marshal(next)
		if err := lv.store.Put(ctx, lastKey(r.DeviceID), data, 0); err != nil {
			lv.log("last-known values not updated", "device", r.DeviceID, "err", err)
			return
		}
	}
	lv.cacheNewer(r.DeviceID, next)
}

// cacheNewer replaces the cached values of device by lk unless the cached ones are newer.
func (lv *lastValues) cacheNewer(device string, lk *lastKnown) {
	if lk == nil {
		return
	}
	lv.mu.Lock()
	defer lv.mu.Unlock()
	if cur := lv.cache[device]; cur == nil || !lk.TS.Before(cur.TS) {
		lv.cache[device] = lk
	}
}

// flush writes what is pending without further spacing (from now on: it is meant for shutdown)
// and waits until no writer runs, or ctx ends.
func (lv *lastValues) flush(ctx context.Context) error {
	lv.mu.Lock()
	idle := lv.idle
	select {
	case <-lv.hurry:
	default:
		close(lv.hurry)
	}
	lv.mu.Unlock()
	select {
	case <-idle:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
