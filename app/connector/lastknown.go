package connector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
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

func (c *Connector) loadLast(ctx context.Context, device string) (*lastKnown, string, error) {
	v, etag, found, err := c.opts.Store.Get(ctx, lastKey(device))
	if err != nil || !found {
		return nil, "", err
	}
	var lk lastKnown
	if err := json.Unmarshal(v, &lk); err != nil {
		c.log.Warn("malformed last-known values ignored", "device", device, "err", err)
		return nil, etag, nil
	}
	return &lk, etag, nil
}

// storeLast merges r into the last-known values if r is not older than them, with the ETag read
// before the write (one retry on a conflict). Best effort: the values are context for later rows,
// not data; a failure is logged.
func (c *Connector) storeLast(ctx context.Context, r *telemetry.Reading, last *lastKnown, etag string) {
	for attempt := 0; attempt < 2; attempt++ {
		if attempt > 0 {
			var err error
			if last, etag, err = c.loadLast(ctx, r.DeviceID); err != nil {
				break
			}
		}
		if last != nil && r.TS.Before(last.TS) {
			return // an older reading arrived late: keep the newer values
		}
		next := lastKnown{Seq: r.Seq, TS: r.TS, Metrics: map[string]telemetry.Metric{}}
		if last != nil {
			for k, v := range last.Metrics {
				next.Metrics[k] = v
			}
		}
		for k, v := range r.Metrics {
			next.Metrics[k] = v
		}
		data, _ := json.Marshal(next)
		var err error
		if etag == "" {
			err = c.opts.Store.Create(ctx, lastKey(r.DeviceID), data)
		} else {
			err = c.opts.Store.Replace(ctx, lastKey(r.DeviceID), data, etag, 0)
		}
		if err == nil {
			return
		}
		if !errors.Is(err, kv.ErrConflict) && !errors.Is(err, kv.ErrExists) {
			c.log.Warn("last-known values not updated", "device", r.DeviceID, "err", fmt.Errorf("%w", err))
			return
		}
	}
	c.log.Debug("last-known values not updated: concurrent updates", "device", r.DeviceID)
}
