package bench

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sync"
	"sync/atomic"
	"time"

	dapr "github.com/dapr/go-sdk/client"
)

// stateContender is one state store behind daprd.
type stateContender struct {
	id       string
	title    string
	broker   brokerKind
	program  string
	typ      string
	metadata func(brokerAt string) map[string]string
	floor    bool
	// peer is the id of the contender this one is compared with ("" for none).
	peer string
}

// stateContenders are compared in every round: the no-op floor, Dapr's in-tree stores and
// state.mqttkv on mqbroker. state.mqttkv runs as `make run` configures it (persistent: true).
var stateContenders = []stateContender{
	{id: "noop", title: "no-op pluggable (floor)", program: "noop", typ: "state.noop", floor: true,
		metadata: func(string) map[string]string { return nil }},
	{id: "in-memory", title: "state.in-memory (in daprd)", typ: "state.in-memory",
		metadata: func(string) map[string]string { return nil }},
	{id: "redis", title: "state.redis (in daprd), redis-server without persistence", broker: redisMemory, typ: "state.redis",
		metadata: redisMetadata},
	{id: "redis-aof", title: "state.redis, redis-server appendonly + appendfsync always", broker: redisAOF, typ: "state.redis",
		metadata: redisMetadata},
	{id: "mqttkv", title: "state.mqttkv, mqbroker in memory", broker: mqbrokerMemory, program: "state-kv", typ: "state.mqttkv",
		metadata: mqttkvMetadata, peer: "redis"},
	{id: "mqttkv-disk", title: "state.mqttkv, mqbroker with a data directory", broker: mqbrokerDisk, program: "state-kv", typ: "state.mqttkv",
		metadata: mqttkvMetadata, peer: "redis-aof"},
}

// baseStateKV, when set, names another state-kv binary (a build of main, say) that runs as the
// extra contender "mqttkv-base" beside "mqttkv", in the same rounds: a before/after through daprd.
const baseStateKV = "MQDAPR_BENCH_STATEKV_BASE"

func init() {
	if os.Getenv(baseStateKV) == "" {
		return
	}
	stateContenders = append(stateContenders, stateContender{id: "mqttkv-base", title: "state.mqttkv built from " + baseStateKV + ", mqbroker in memory",
		broker: mqbrokerMemory, program: "state-kv-base", typ: "state.mqttkv", metadata: mqttkvMetadata, peer: "redis"})
}

func redisMetadata(at string) map[string]string {
	return map[string]string{"redisHost": at, "redisPassword": ""}
}

func mqttkvMetadata(at string) map[string]string {
	return map[string]string{"url": "mqtt://" + at, "clientID": "bench", "connectTimeout": "10s", "persistent": "true"}
}

// stateOps are the measured operations, in order.
var stateOps = []string{"set", "get", "etag", "bulkget"}

// stateOpTitles name them in BENCHMARKS.md.
var stateOpTitles = map[string]string{"set": "Set", "get": "Get", "etag": "ETag cycle", "bulkget": "BulkGet(100)"}

// bulkKeys is the size of one BulkGet, and the number of keys written before the runs.
const bulkKeys = 100

// stateRun is one contender's round.
type stateRun struct {
	h     *harness
	c     stateContender
	daprd daprdBinary
}

func (r *stateRun) run(ctx context.Context, _ int) error {
	h := r.h
	s, err := h.newStack(r.c.id)
	if err != nil {
		return err
	}
	defer s.close()
	if err := s.startBroker(ctx, r.c.broker); err != nil {
		return err
	}
	if r.c.program != "" {
		if err := s.startComponent(ctx, r.c.program); err != nil {
			return err
		}
	}
	if err := s.component("st", r.c.typ, r.c.metadata(s.brokerAt)); err != nil {
		return err
	}
	if err := s.startDaprd(ctx, r.daprd.path, 0); err != nil {
		return err
	}
	client, err := dapr.NewClientWithAddressContext(ctx, fmt.Sprintf("127.0.0.1:%d", s.daprGRPC))
	if err != nil {
		return fmt.Errorf("dapr client: %w", err)
	}
	defer client.Close()
	value := payload("v", 0)
	keys := make([]string, bulkKeys)
	for i := range keys {
		keys[i] = fmt.Sprintf("k%d", i)
		if err := client.SaveState(ctx, "st", keys[i], value, nil); err != nil {
			return fmt.Errorf("first Set: %w", err)
		}
	}
	idle := s.idleRSS()
	for name, kb := range idle {
		h.res.add(r.c.id, "rss-idle/"+name, float64(kb)/1024)
	}
	ops := map[string]func(ctx context.Context, client, i int) error{
		"set": func(ctx context.Context, _, i int) error {
			return client.SaveState(ctx, "st", keys[i%bulkKeys], value, nil)
		},
		"get": func(ctx context.Context, _, i int) error {
			item, err := client.GetState(ctx, "st", keys[i%bulkKeys], nil)
			if err == nil && len(item.Value) != len(value) {
				err = fmt.Errorf("Get %s: %d bytes, want %d", keys[i%bulkKeys], len(item.Value), len(value))
			}
			return err
		},
		// Get, then Set with the ETag it returned; each client its own key, so no conflicts.
		"etag": func(ctx context.Context, c, _ int) error {
			key := fmt.Sprintf("e%d", c)
			item, err := client.GetState(ctx, "st", key, nil)
			if err != nil {
				return err
			}
			return client.SaveStateWithETag(ctx, "st", key, value, item.Etag, nil)
		},
		"bulkget": func(ctx context.Context, _, _ int) error {
			items, err := client.GetBulkState(ctx, "st", keys, nil, 0)
			if err == nil && len(items) != len(keys) {
				err = fmt.Errorf("BulkGet: %d items, want %d", len(items), len(keys))
			}
			return err
		},
	}
	load, peak := map[string]int64{}, map[string]int64{} // highest VmRSS and VmHWM over the operations
	// drive runs n operations of one kind from the clients.
	drive := func(op string, n int) error {
		var next atomic.Int64
		var opErr atomic.Value
		var wg sync.WaitGroup
		for c := range publishers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
					octx, cancel := context.WithTimeout(ctx, 30*time.Second)
					err := ops[op](octx, c, int(i))
					cancel()
					if err != nil {
						opErr.CompareAndSwap(nil, err)
						return
					}
				}
			}()
		}
		wg.Wait()
		e, _ := opErr.Load().(error)
		return e
	}
	for _, op := range stateOps {
		n := h.cfg.stateOps(op)
		// Unmeasured first: every client's connections and daprd's paths of this operation are set
		// up before the clock starts.
		if err := drive(op, 2*publishers); err != nil {
			return fmt.Errorf("%s (warm-up): %w", stateOpTitles[op], errors.Join(err, ctx.Err()))
		}
		u, err := s.measure(func() error { return drive(op, n) })
		if err != nil {
			return fmt.Errorf("%s: %w", stateOpTitles[op], errors.Join(err, ctx.Err()))
		}
		h.res.add(r.c.id, "ops/"+op, float64(n)/u.wall.Seconds())
		for name, cpu := range u.cpu {
			h.res.add(r.c.id, "cpu-"+op+"/"+name, float64(cpu.Microseconds())/float64(n))
		}
		for name, kb := range u.rss {
			load[name] = max(load[name], kb)
		}
		for name, kb := range u.hwm {
			peak[name] = max(peak[name], kb)
		}
	}
	for name, kb := range load {
		h.res.add(r.c.id, "rss-load/"+name, float64(kb)/1024)
		h.res.add(r.c.id, "rss-peak/"+name, float64(peak[name])/1024)
	}
	return nil
}
