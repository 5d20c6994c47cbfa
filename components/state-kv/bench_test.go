package statekv

import (
	"strconv"
	"sync/atomic"
	"testing"

	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/components-contrib/state"
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
