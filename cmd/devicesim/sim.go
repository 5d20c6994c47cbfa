package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"time"
)

// publisher sends one message at QoS 1 and returns after the broker acknowledged it (PUBACK).
type publisher interface {
	Publish(ctx context.Context, topic string, payload []byte, retain bool, userProps map[string]string) error
}

// simConfig is what a simulation run does.
type simConfig struct {
	devices, assets int
	rate            float64       // messages per second over all devices; ≤ 0: as fast as acks allow
	count           int64         // total telemetry messages; 0: no limit
	duration        time.Duration // 0: no limit
	topicPrefix     string        // telemetry on <prefix>/<deviceId>/telemetry
	configPrefix    string        // retained config on <configPrefix>/<assetId>
	publishConfig   bool
	messageID       bool  // identity in the message-id user property instead of seq
	invalidEvery    int64 // every n-th message is invalid (dead-letter demo); 0: never
	seqStart        int64
	seed            uint64
}

// summary is what a run did.
type summary struct {
	Configs   int              `json:"configs"`
	Published int64            `json:"published"`
	Invalid   int64            `json:"invalid"`
	Failed    int64            `json:"failed"`
	Elapsed   time.Duration    `json:"elapsed"`
	LastSeq   map[string]int64 `json:"lastSeq"`
}

func (s summary) print(w io.Writer) {
	rate := 0.0
	if s.Elapsed > 0 {
		rate = float64(s.Published) / s.Elapsed.Seconds()
	}
	fmt.Fprintf(w, "devicesim: %d asset configs (retained), %d telemetry messages acked (%d invalid on purpose), %d failed, in %s (%.1f msg/s)\n",
		s.Configs, s.Published, s.Invalid, s.Failed, s.Elapsed.Round(time.Millisecond), rate)
	b, _ := json.Marshal(s.LastSeq)
	fmt.Fprintf(w, "devicesim: last sequence number per device: %s\n", b)
}

// simulate publishes the retained asset configuration (if asked), then telemetry round robin over
// the devices at cfg.rate until count, duration or ctx ends. A failed publish is counted and the
// run goes on (the sequence number is used up: the lake shows the gap).
func simulate(ctx context.Context, cfg simConfig, pub publisher, now func() time.Time) (summary, error) {
	f := newFleet(cfg.devices, cfg.assets, cfg.seqStart, cfg.seed)
	s := summary{LastSeq: map[string]int64{}}
	start := now()
	if cfg.publishConfig {
		for _, a := range f.assets {
			b, _ := json.Marshal(a)
			if err := pub.Publish(ctx, cfg.configPrefix+"/"+a.AssetID, b, true, nil); err != nil {
				return s, fmt.Errorf("publishing the configuration of %s: %w", a.AssetID, err)
			}
			s.Configs++
		}
	}
	if cfg.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, cfg.duration)
		defer cancel()
	}
	var tick <-chan time.Time
	if cfg.rate > 0 {
		t := time.NewTicker(time.Duration(float64(time.Second) / cfg.rate))
		defer t.Stop()
		tick = t.C
	}
	for i := int64(0); cfg.count == 0 || i < cfg.count; i++ {
		if tick != nil {
			select {
			case <-ctx.Done():
			case <-tick:
			}
		}
		if ctx.Err() != nil {
			break
		}
		d := f.devices[i%int64(len(f.devices))]
		at := now()
		var payload []byte
		var seq int64
		bad := cfg.invalidEvery > 0 && (i+1)%cfg.invalidEvery == 0
		if bad {
			payload, seq = invalid(d, at), d.seq
			d.seq++
		} else {
			payload, seq = f.next(d, at, !cfg.messageID)
		}
		var props map[string]string
		if cfg.messageID {
			props = map[string]string{"message-id": d.id + "-" + strconv.FormatInt(seq, 10)}
		}
		if err := pub.Publish(ctx, cfg.topicPrefix+"/"+d.id+"/telemetry", payload, false, props); err != nil {
			if ctx.Err() != nil {
				break
			}
			s.Failed++
			continue
		}
		s.Published++
		if bad {
			s.Invalid++
		}
		s.LastSeq[d.id] = seq
	}
	s.Elapsed = now().Sub(start)
	return s, nil
}
