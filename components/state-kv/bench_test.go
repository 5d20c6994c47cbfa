package statekv

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/components-contrib/state"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/kvservice"
	"github.com/mqdapr/mqdapr/broker/statestore"
)

// Round trips through the embedded broker on loopback (one component, requests from parallel
// goroutines): go test -run '^$' -bench . ./components/state-kv/
func BenchmarkOps(b *testing.B) {
	kb := startBrokerB(b)
	s := New(testLog)
	if err := s.Init(b.Context(), state.Metadata{Base: metadata.Base{Properties: props(kb.url(), "bench")}}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	value := make([]byte, 64)
	var n atomic.Int64

	b.Run("Set", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				k := "k" + strconv.FormatInt(n.Add(1)%1000, 10)
				if err := s.Set(b.Context(), &state.SetRequest{Key: k, Value: value}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("Get", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				k := "k" + strconv.FormatInt(n.Add(1)%1000, 10)
				if _, err := s.Get(b.Context(), &state.GetRequest{Key: k}); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
	b.Run("SetETagUncontended", func(b *testing.B) {
		b.RunParallel(func(pb *testing.PB) {
			k := "e" + strconv.FormatInt(n.Add(1), 10)
			if err := s.Set(b.Context(), &state.SetRequest{Key: k, Value: value}); err != nil {
				b.Error(err)
				return
			}
			for pb.Next() {
				res, err := s.Get(b.Context(), &state.GetRequest{Key: k})
				if err == nil {
					err = s.Set(b.Context(), &state.SetRequest{Key: k, Value: value, ETag: res.ETag})
				}
				if err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// The cost of serialising writes without an ETag with ETag writers, one request at a time:
// a last-write Set on a key never written with an ETag (one SET), on a fenced key (refused SET,
// then lock, SET with token, release), a Delete (always under the lock), and an ETag Set of a
// fenced key (lock, probe, GET, SET, release).
// go test -run '^$' -bench LastWrite ./components/state-kv/
func BenchmarkLastWrite(b *testing.B) {
	kb := startBrokerB(b)
	s := New(testLog)
	if err := s.Init(b.Context(), state.Metadata{Base: metadata.Base{Properties: props(kb.url(), "bench")}}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	value := make([]byte, 64)
	must := func(err error) {
		if err != nil {
			b.Fatal(err)
		}
	}
	must(s.Set(b.Context(), &state.SetRequest{Key: "unfenced", Value: value}))
	must(s.Set(b.Context(), &state.SetRequest{Key: "fenced", Value: value}))
	res, err := s.Get(b.Context(), &state.GetRequest{Key: "fenced"})
	must(err)
	must(s.Set(b.Context(), &state.SetRequest{Key: "fenced", Value: value, ETag: res.ETag}))

	b.Run("SetUnfenced", func(b *testing.B) {
		for b.Loop() {
			must(s.Set(b.Context(), &state.SetRequest{Key: "unfenced", Value: value}))
		}
	})
	b.Run("SetFenced", func(b *testing.B) {
		for b.Loop() {
			must(s.Set(b.Context(), &state.SetRequest{Key: "fenced", Value: value}))
		}
	})
	b.Run("Delete", func(b *testing.B) {
		for b.Loop() {
			must(s.Delete(b.Context(), &state.DeleteRequest{Key: "gone"}))
		}
	})
	b.Run("ETagSetFenced", func(b *testing.B) {
		for b.Loop() {
			res, err := s.Get(b.Context(), &state.GetRequest{Key: "fenced"})
			must(err)
			must(s.Set(b.Context(), &state.SetRequest{Key: "fenced", Value: value, ETag: res.ETag}))
		}
	})
}

// BenchmarkBulkGet reads 100 keys per call (concurrent fan-out, bulkParallelism 16).
//
//	go test -run '^$' -bench BenchmarkBulkGet -benchtime 200x ./components/state-kv
func BenchmarkBulkGet(b *testing.B) {
	kb := startBrokerB(b)
	s := New(testLog)
	if err := s.Init(b.Context(), state.Metadata{Base: metadata.Base{Properties: props(kb.url(), "bench")}}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	reqs := make([]state.GetRequest, 100)
	for i := range reqs {
		reqs[i].Key = "bulk-" + strconv.Itoa(i)
		if err := s.Set(b.Context(), &state.SetRequest{Key: reqs[i].Key, Value: make([]byte, 64)}); err != nil {
			b.Fatal(err)
		}
	}
	b.ResetTimer()
	for range b.N {
		res, err := s.BulkGet(b.Context(), reqs, state.BulkGetOpts{})
		if err != nil || len(res) != len(reqs) {
			b.Fatalf("BulkGet: %d results, %v", len(res), err)
		}
	}
	b.ReportMetric(float64(b.N*len(reqs))/b.Elapsed().Seconds(), "keys/s")
}

// BenchmarkDurability runs Set and Get of 64 B values from 8 goroutines through one component
// (persistent: true, as `make run`) against two embedded brokers side by side: one in memory and one
// with a data directory (the broker's sessions and the key-value file, as mqbroker -data-dir). One
// benchmark iteration is one round: each kind of request on each broker, the order of the brokers
// swapped every round. It reports the medians over the rounds of each broker's ops/s, the ratio
// durable/memory, and the process CPU (user + system, component and broker together, both in this
// process) per request.
//
//	go test -run '^$' -bench BenchmarkDurability -benchtime 6x ./components/state-kv/
func BenchmarkDurability(b *testing.B) {
	const (
		clients  = 8
		keys     = 1000
		perRound = 4000 // requests per kind, broker and round
	)
	type contender struct {
		name string
		s    *Store
	}
	cs := []contender{
		{"memory", New(testLog)},
		{"durable", New(testLog)},
	}
	for i, c := range cs {
		dir := ""
		if c.name == "durable" {
			dir = b.TempDir()
		}
		url := startBenchBroker(b, dir)
		if err := c.s.Init(b.Context(), state.Metadata{Base: metadata.Base{Properties: props(url, "bench-"+c.name)}}); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { _ = cs[i].s.Close() })
	}
	value := make([]byte, 64)
	key := func(i int64) string { return "k" + strconv.FormatInt(i%keys, 10) }
	for _, c := range cs {
		for i := range int64(keys) {
			if err := c.s.Set(b.Context(), &state.SetRequest{Key: key(i), Value: value}); err != nil {
				b.Fatal(err)
			}
		}
	}
	ops := map[string]func(*Store, int64) error{
		"Set": func(s *Store, i int64) error {
			return s.Set(b.Context(), &state.SetRequest{Key: key(i), Value: value})
		},
		"Get": func(s *Store, i int64) error {
			res, err := s.Get(b.Context(), &state.GetRequest{Key: key(i)})
			if err == nil && len(res.Data) != len(value) {
				b.Errorf("Get %s: %d bytes, want %d", key(i), len(res.Data), len(value))
			}
			return err
		},
	}
	// round runs perRound requests of one kind from clients goroutines; it returns the wall time and
	// the process CPU time.
	round := func(s *Store, op func(*Store, int64) error) (wall, cpu time.Duration) {
		var next atomic.Int64
		var wg sync.WaitGroup
		cpu0 := processCPU(b)
		start := time.Now()
		for range clients {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := next.Add(1); i <= perRound; i = next.Add(1) {
					if err := op(s, i); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		wg.Wait()
		return time.Since(start), processCPU(b) - cpu0
	}
	type sample struct{ opsPerSec, cpuPerOp []float64 }
	samples := map[string]*sample{}
	n := 0
	for b.Loop() {
		order := cs
		if n%2 == 1 {
			order = []contender{cs[1], cs[0]}
		}
		n++
		for _, kind := range []string{"Set", "Get"} {
			for _, c := range order {
				wall, cpu := round(c.s, ops[kind])
				k := kind + "/" + c.name
				if samples[k] == nil {
					samples[k] = &sample{}
				}
				samples[k].opsPerSec = append(samples[k].opsPerSec, perRound/wall.Seconds())
				samples[k].cpuPerOp = append(samples[k].cpuPerOp, float64(cpu.Microseconds())/perRound)
			}
		}
	}
	median := func(v []float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	for _, kind := range []string{"Set", "Get"} {
		mem, dur := samples[kind+"/memory"], samples[kind+"/durable"]
		b.ReportMetric(median(mem.opsPerSec), kind+"-memory-ops/s")
		b.ReportMetric(median(dur.opsPerSec), kind+"-durable-ops/s")
		b.ReportMetric(median(dur.opsPerSec)/median(mem.opsPerSec), kind+"-durable/memory")
		b.ReportMetric(median(mem.cpuPerOp), kind+"-memory-CPU-µs/op")
		b.ReportMetric(median(dur.cpuPerOp), kind+"-durable-CPU-µs/op")
	}
	b.ReportMetric(0, "ns/op") // a round's time says nothing; the figures above do
}

// startBenchBroker starts an embedded broker with its key-value service on 127.0.0.1:0 and returns
// its URL. With dataDir, the broker keeps its sessions there and the key-value store its durable
// keys in dataDir/kv, as mqbroker -data-dir does; empty runs in memory.
func startBenchBroker(b *testing.B, dataDir string) string {
	b.Helper()
	eo := statestore.NewDefaultOptions()
	var store *kvservice.LogStore
	if dataDir != "" {
		var err error
		if store, err = kvservice.OpenLogStore(filepath.Join(dataDir, "kv")); err != nil {
			b.Fatal(err)
		}
		eo.Store = store
	}
	engine, err := statestore.NewEngine(eo)
	if err != nil {
		b.Fatal(err)
	}
	svc, err := kvservice.New(kvservice.Options{Engine: engine})
	if err != nil {
		b.Fatal(err)
	}
	o := broker.NewDefaultOptions()
	o.Addr, o.DataDir = "127.0.0.1:0", dataDir
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	o.Services = []broker.Service{svc}
	br, err := broker.New(o)
	if err != nil {
		b.Fatal(err)
	}
	if err := br.Start(); err != nil {
		b.Fatal(err)
	}
	if err := svc.Start(br); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = svc.Close()
		_ = br.Close()
		_ = engine.Close()
		if store != nil {
			_ = store.Close()
		}
	})
	return "mqtt://" + br.Addrs()[0]
}

// processCPU is the CPU time (user + system) this process has used so far.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkComponentCPU drives each kind of request from 8 goroutines through one component and
// reports its ops/s and the process CPU per operation (user + system). With MQDAPR_BENCH_BROKER set
// to a broker URL (for example a separate `mqbroker -addr 127.0.0.1:18830`) the process holds only the
// component and the driver, so the CPU is the component's own; without it an embedded broker runs
// in the process and its CPU is included. A BulkGet counts as one operation (100 keys).
//
//	MQDAPR_BENCH_BROKER=mqtt://127.0.0.1:18830 go test -run '^$' -bench ComponentCPU -benchtime 3x ./components/state-kv/
func BenchmarkComponentCPU(b *testing.B) {
	const (
		clients = 8
		keys    = 100
	)
	url := os.Getenv("MQDAPR_BENCH_BROKER")
	if url == "" {
		url = startBenchBroker(b, "")
	}
	s := New(testLog)
	if err := s.Init(b.Context(), state.Metadata{Base: metadata.Base{Properties: props(url, "bench-cpu-"+strconv.Itoa(os.Getpid()))}}); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	value := make([]byte, 64)
	prefix := "cpu" + strconv.Itoa(os.Getpid()) + "-"
	key := func(i int64) string { return prefix + strconv.FormatInt(i%keys, 10) }
	bulk := make([]state.GetRequest, keys)
	for i := range bulk {
		bulk[i].Key = key(int64(i))
		if err := s.Set(b.Context(), &state.SetRequest{Key: bulk[i].Key, Value: value}); err != nil {
			b.Fatal(err)
		}
	}
	var round atomic.Int64
	type op struct {
		name string
		n    int64
		fn   func(c, i int64) error
	}
	ops := []op{
		{"Set", 4000, func(_, i int64) error { return s.Set(b.Context(), &state.SetRequest{Key: key(i), Value: value}) }},
		{"Get", 4000, func(_, i int64) error {
			res, err := s.Get(b.Context(), &state.GetRequest{Key: key(i)})
			if err == nil && len(res.Data) != len(value) {
				err = errors.New("Get: wrong value")
			}
			return err
		}},
		{"ETagCycle", 1000, func(c, _ int64) error { // Get, then Set with its ETag; one key per client
			k := prefix + "e" + strconv.FormatInt(c, 10)
			res, err := s.Get(b.Context(), &state.GetRequest{Key: k})
			if err != nil {
				return err
			}
			return s.Set(b.Context(), &state.SetRequest{Key: k, Value: value, ETag: res.ETag})
		}},
		{"FirstWrite", 2000, func(_, i int64) error { // a new key every time, first-write concurrency
			return s.Set(b.Context(), &state.SetRequest{Key: prefix + "fw" + strconv.FormatInt(round.Load(), 10) + "-" + strconv.FormatInt(i, 10), Value: value,
				Options: state.SetStateOption{Concurrency: state.FirstWrite}})
		}},
		{"Delete", 1000, func(_, i int64) error {
			return s.Delete(b.Context(), &state.DeleteRequest{Key: prefix + "gone" + strconv.FormatInt(i%keys, 10)})
		}},
		{"BulkGet100", 100, func(_, _ int64) error {
			res, err := s.BulkGet(b.Context(), bulk, state.BulkGetOpts{})
			if err == nil {
				for _, r := range res {
					if r.Error != "" || len(r.Data) != len(value) {
						return fmt.Errorf("BulkGet: %q: %q", r.Key, r.Error)
					}
				}
			}
			return err
		}},
	}
	type sample struct{ opsPerSec, cpuPerOp []float64 }
	samples := make([]sample, len(ops))
	for b.Loop() {
		round.Add(1)
		for j, o := range ops {
			var next atomic.Int64
			var wg sync.WaitGroup
			cpu0 := processCPU(b)
			start := time.Now()
			for c := range int64(clients) {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := next.Add(1); i <= o.n; i = next.Add(1) {
						if err := o.fn(c, i); err != nil {
							b.Error(o.name, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			wall, cpu := time.Since(start), processCPU(b)-cpu0
			samples[j].opsPerSec = append(samples[j].opsPerSec, float64(o.n)/wall.Seconds())
			samples[j].cpuPerOp = append(samples[j].cpuPerOp, float64(cpu.Microseconds())/float64(o.n))
		}
	}
	median := func(v []float64) float64 {
		v = slices.Clone(v)
		slices.Sort(v)
		if len(v)%2 == 1 {
			return v[len(v)/2]
		}
		return (v[len(v)/2-1] + v[len(v)/2]) / 2
	}
	for j, o := range ops {
		b.ReportMetric(median(samples[j].opsPerSec), o.name+"-ops/s")
		b.ReportMetric(median(samples[j].cpuPerOp), o.name+"-CPU-µs/op")
	}
	b.ReportMetric(0, "ns/op")
}
