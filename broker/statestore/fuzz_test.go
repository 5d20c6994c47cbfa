package statestore

import (
	"context"
	"sync"
	"testing"

	"github.com/mqdapr/mqdapr/internal/hlc"
	"github.com/mqdapr/mqdapr/internal/resp3"
)

// FuzzHandle feeds arbitrary payloads and __ts/__ft values to an engine and checks that it never
// panics, always answers a valid request with `__stat` 200 and a well-formed RESP3 response, and
// that every __ts it returns parses and every SET version exceeds the previous one.
//
//	go test -run '^$' -fuzz FuzzHandle -fuzztime 20s ./broker/statestore
func FuzzHandle(f *testing.F) {
	for _, p := range []string{
		array("SET", "lock", "client1", "NX", "PX", "10000"),
		array("SET", "k", "v", "NEX"),
		array("GET", "lock"),
		array("DEL", "k"),
		array("VDEL", "k", "v"),
		array("KEYNOTIFY", "k"),
		array("KEYNOTIFY", "k", "STOP"),
		"*2\r\n$3\r\nGET\r\n$9\r\nlock\r\n",
		"",
	} {
		f.Add([]byte(p), ts(t0, 0, "c"), "")
		f.Add([]byte(p), ts(t0, 1, "c"), ts(t0, 0, "lock"))
	}
	f.Fuzz(func(t *testing.T, payload []byte, tsProp, ftProp string) {
		h := newHarness(t, func(o *Options) { o.MaxKeys = 4; o.MaxValueBytes = 64 })
		ctx := context.Background()
		var last hlc.HLC
		// Run the fuzzed request a few times interleaved with a fixed SET, so that state (existing
		// keys, fencing, watches) matters.
		for i := 0; i < 3; i++ {
			r := req("app1", string(payload), "__ts="+tsProp)
			if ftProp != "" {
				r.Properties.User = append(r.Properties.User, UserProperty{PropFencingToken, ftProp})
			}
			res, err := h.e.Handle(ctx, r)
			if err != nil {
				t.Fatalf("Handle: %v", err)
			}
			if s, _ := res.Response.Properties.Get(PropStatus); s != "200" {
				t.Fatalf("__stat = %q", s)
			}
			if _, err := resp3.DecodeResponse(res.Response.Payload); err != nil {
				t.Fatalf("response %q does not decode: %v", res.Response.Payload, err)
			}
			if v, ok := res.Response.Properties.Get(PropTimestamp); ok {
				if _, err := hlc.Parse(v); err != nil {
					t.Fatalf("__ts %q: %v", v, err)
				}
			}
			for _, n := range res.Notifications {
				if _, err := resp3.DecodeArray(n.Payload); err != nil {
					t.Fatalf("notification %q: %v", n.Payload, err)
				}
			}
			res = h.do(array("SET", "fixed", "v"), h.nowTS())
			if v, ok := res.Response.Properties.Get(PropTimestamp); ok {
				cur, _ := hlc.Parse(v)
				if hlc.Compare(cur, last) <= 0 {
					t.Fatalf("version %v not after %v", cur, last)
				}
				last = cur
			}
			h.wall.AddMs(7)
		}
	})
}

// TestConcurrentHandle runs requests from several goroutines under the race detector; NX on one key
// lets exactly one of them acquire it.
func TestConcurrentHandle(t *testing.T) {
	h := newHarness(t, nil)
	const clients = 8
	var wg sync.WaitGroup
	wins := make(chan string, clients)
	for c := 0; c < clients; c++ {
		id := string(rune('a' + c))
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx := context.Background()
			_, _ = h.e.Handle(ctx, req(id, array("KEYNOTIFY", "lock")))
			res, err := h.e.Handle(ctx, req(id, array("SET", "lock", id, "NX", "PX", "1000"), "__ts="+ts(t0, 0, id)))
			if err != nil {
				t.Error(err)
				return
			}
			if string(res.Response.Payload) == "+OK\r\n" {
				wins <- id
			}
			_, _ = h.e.Handle(ctx, req(id, array("GET", "lock")))
			h.e.ClientDisconnected(id)
			_, _ = h.e.NextDeadline()
			_ = h.e.Expire(ctx, h.wall.Now())
		}()
	}
	wg.Wait()
	close(wins)
	var n int
	for range wins {
		n++
	}
	if n != 1 {
		t.Errorf("%d clients acquired the NX lock, want 1", n)
	}
}
