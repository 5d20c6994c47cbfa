package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"sync"
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
	// inflight is how many devices may have a publish awaiting its PUBACK at once (each device's
	// readings stay in order); 1 publishes one reading at a time.
	inflight int
}

// reading is one telemetry message ready to publish.
type reading struct {
	topic, device string
	payload       []byte
	props         map[string]string
	seq           int64
	bad           bool
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
// the devices at cfg.rate (with up to cfg.inflight devices publishing at once) until count,
// duration or ctx ends. A failed publish is counted and the
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
	// The readings are made here in round-robin order; worker i publishes the readings of
	// devices i, i+w, … one at a time, so a device's readings reach the broker in order while up to
	// w devices have a publish in flight.
	w := max(1, min(cfg.inflight, len(f.devices)))
	queues := make([]chan reading, w)
	var mu sync.Mutex // guards s from the workers
	var wg sync.WaitGroup
	for i := range queues {
		queues[i] = make(chan reading, 1)
		wg.Go(func() {
			for r := range queues[i] {
				err := pub.Publish(ctx, r.topic, r.payload, false, r.props)
				mu.Lock()
				switch {
				case err != nil && ctx.Err() == nil:
					s.Failed++
				case err == nil:
					s.Published++
					if r.bad {
						s.Invalid++
					}
					s.LastSeq[r.device] = r.seq
				}
				mu.Unlock()
			}
		})
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
		di := int(i % int64(len(f.devices)))
		d := f.devices[di]
		at := now()
		r := reading{topic: cfg.topicPrefix + "/" + d.id + "/telemetry", device: d.id}
		r.bad = cfg.invalidEvery > 0 && (i+1)%cfg.invalidEvery == 0
		if r.bad {
			r.payload, r.seq = invalid(d, at), d.seq
			d.seq++
		} else {
			r.payload, r.seq = f.next(d, at, !cfg.messageID)
		}
		if cfg.messageID {
			r.props = map[string]string{"message-id": d.id + "-" + strconv.FormatInt(r.seq, 10)}
		}
		select {
		case queues[di%w] <- r:
		case <-ctx.Done():
		}
	}
	for _, q := range queues {
		close(q)
	}
	wg.Wait()
	s.Elapsed = now().Sub(start)
	return s, nil
}
