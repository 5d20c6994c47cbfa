package broker

import (
	"context"
	"encoding/binary"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// benchResult is one QoS 1 run: routed messages per second and end-to-end latency.
type benchResult struct {
	rate     float64
	p50, p99 time.Duration
}

// runQoS1 publishes n 64-byte QoS 1 messages from 4 clients (16 concurrent publishes each) to one
// QoS 1 subscriber through the broker at addr.
func runQoS1(b *testing.B, addr string, n int) benchResult {
	return runQoS1Dial(b, func(id string, opts ...clientOpt) (*client, error) { return tryClient(b, addr, id, opts...) }, n)
}

// runQoS1Dial is runQoS1 with clients connected by dial (e.g. over WebSocket).
func runQoS1Dial(b *testing.B, dial func(id string, opts ...clientOpt) (*client, error), n int) benchResult {
	const pubs, window = 4, 16
	n -= n % (pubs * window)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	lat := make([]time.Duration, 0, n)
	var mu sync.Mutex
	got := make(chan struct{})
	sub, err := dial("bench-sub", withReceiveMax(1000), withExpiry(3600)) // a persistent session: stored messages
	if err != nil {
		b.Fatal(err)
	}
	go func() {
		for m := range sub.msgs {
			d := time.Duration(time.Now().UnixNano() - int64(binary.BigEndian.Uint64(m.Payload)))
			mu.Lock()
			lat = append(lat, d)
			done := len(lat) == n
			mu.Unlock()
			if done {
				close(got)
				return
			}
		}
	}()
	sub.subscribe(b, "bench/#", 1)
	start := time.Now()
	var wg sync.WaitGroup
	for p := range pubs {
		pc, err := dial(fmt.Sprint("bench-pub", p))
		if err != nil {
			b.Fatal(err)
		}
		per := n / (pubs * window)
		for range window {
			wg.Add(1)
			go func() {
				defer wg.Done()
				payload := make([]byte, 64)
				for range per {
					binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
					if _, err := pc.Publish(ctx, &paho.Publish{Topic: "bench/t", QoS: 1, Payload: slices.Clone(payload)}); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	select {
	case <-got:
	case <-ctx.Done():
		mu.Lock()
		b.Fatalf("%d of %d messages received", len(lat), n)
	}
	elapsed := time.Since(start)
	slices.Sort(lat)
	return benchResult{rate: float64(n) / elapsed.Seconds(), p50: lat[len(lat)/2], p99: lat[len(lat)*99/100]}
}

func freePort(b *testing.B) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	return addr
}

// startMosquitto runs /usr/sbin/mosquitto with persistence on a free port.
func startMosquitto(b *testing.B) string {
	const bin = "/usr/sbin/mosquitto"
	if _, err := os.Stat(bin); err != nil {
		b.Skip("mosquitto not installed: run scripts/install-test-deps.sh")
	}
	dir := b.TempDir()
	addr := freePort(b)
	_, port, _ := net.SplitHostPort(addr)
	conf := fmt.Sprintf("listener %s 127.0.0.1\nallow_anonymous true\npersistence true\npersistence_location %s/\n"+
		"autosave_interval 1\nmax_queued_messages 100000\nmax_inflight_messages 1000\npersistent_client_expiration 1d\n"+
		"log_dest file %s/mosquitto.log\nuser root\n", port, dir, dir)
	cf := filepath.Join(dir, "mosquitto.conf")
	if err := os.WriteFile(cf, []byte(conf), 0o600); err != nil {
		b.Fatal(err)
	}
	cmd := exec.Command(bin, "-c", cf)
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		_ = cmd.Wait()
	})
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
			return addr
		}
		if time.Now().After(deadline) {
			b.Fatal("mosquitto did not start")
		}
		time.Sleep(20 * time.Millisecond) // polling a port for readiness (not test synchronisation)
	}
}

// BenchmarkQoS1VsMosquitto measures QoS 1 throughput and latency of mqbroker in memory, mqbroker with a
// durable data directory, and Mosquitto (persistence on, snapshot-based) in one run, and reports them
// as ratios to Mosquitto. Run with:
//
//	go test -run '^$' -bench QoS1VsMosquitto -benchtime 1x ./broker/
func BenchmarkQoS1VsMosquitto(b *testing.B) {
	const n = 20000
	for range b.N {
		mosq := runQoS1(b, startMosquitto(b), n)
		mem := runQoS1(b, newBroker(b, func(o *Options) { o.ReceiveMaximum = 1000 }).Addrs()[0], n)
		durBroker := newBroker(b, func(o *Options) { o.ReceiveMaximum = 1000; o.DataDir = b.TempDir() })
		dur := runQoS1(b, durBroker.Addrs()[0], n)
		b.ReportMetric(float64(n)/float64(durBroker.Stats().StoreCommits), "durable-msgs/fsync")
		b.ReportMetric(mosq.rate, "mosquitto-msg/s")
		b.ReportMetric(mem.rate, "memory-msg/s")
		b.ReportMetric(dur.rate, "durable-msg/s")
		b.ReportMetric(mem.rate/mosq.rate, "memory/mosquitto-throughput")
		b.ReportMetric(dur.rate/mosq.rate, "durable/mosquitto-throughput")
		b.ReportMetric(float64(mem.p50)/float64(mosq.p50), "memory/mosquitto-p50-latency")
		b.ReportMetric(float64(dur.p50)/float64(mosq.p50), "durable/mosquitto-p50-latency")
		b.ReportMetric(float64(mem.p99)/float64(mosq.p99), "memory/mosquitto-p99-latency")
		b.ReportMetric(float64(dur.p99)/float64(mosq.p99), "durable/mosquitto-p99-latency")
		b.Logf("mosquitto %.0f msg/s p50 %v p99 %v; memory %.0f msg/s p50 %v p99 %v; durable %.0f msg/s p50 %v p99 %v",
			mosq.rate, mosq.p50, mosq.p99, mem.rate, mem.p50, mem.p99, dur.rate, dur.p50, dur.p99)
	}
}

// BenchmarkDeliveryDurableVsMemory runs the same QoS 1 workload (4 publishers, 16 publishes in flight
// each, one persistent subscriber that PUBACKs every message) against mqbroker in memory and with a
// data directory, alternating the two round by round (one round of each per iteration, a fresh broker
// per round), and reports delivered msg/s of each, their ratio, the CPU time of the test process
// (broker and clients) per delivered message, and store commits (bbolt transactions, each one fsync
// of the pages and one of the meta page) and store ops per delivered message. Run with:
//
//	go test -run '^$' -bench DeliveryDurableVsMemory -benchtime 5x -count 3 ./broker/
func BenchmarkDeliveryDurableVsMemory(b *testing.B) {
	const n = 20000
	var memTime, durTime, memCPU, durCPU time.Duration
	var commits, ops int64
	rounds := 0
	for i := range b.N {
		run := func(durable bool) {
			br := newBroker(b, func(o *Options) {
				o.ReceiveMaximum = 1000
				if durable {
					o.DataDir = b.TempDir()
				}
			})
			before := br.Stats()
			cpu := processCPU(b)
			r := runQoS1(b, br.Addrs()[0], n)
			cpu = processCPU(b) - cpu
			d := time.Duration(float64(n) / r.rate * float64(time.Second))
			if durable {
				durTime += d
				durCPU += cpu
				after := br.Stats()
				commits += after.StoreCommits - before.StoreCommits
				ops += after.StoreOps - before.StoreOps
			} else {
				memTime += d
				memCPU += cpu
			}
		}
		if i%2 == 0 { // alternate which goes first
			run(false)
			run(true)
		} else {
			run(true)
			run(false)
		}
		rounds++
	}
	msgs := float64(rounds * n)
	mem, dur := msgs/memTime.Seconds(), msgs/durTime.Seconds()
	b.ReportMetric(mem, "memory-msg/s")
	b.ReportMetric(dur, "durable-msg/s")
	b.ReportMetric(dur/mem, "durable/memory")
	b.ReportMetric(float64(memCPU.Microseconds())/msgs, "memory-cpu-µs/msg")
	b.ReportMetric(float64(durCPU.Microseconds())/msgs, "durable-cpu-µs/msg")
	b.ReportMetric(float64(commits)/msgs, "commits/msg")
	b.ReportMetric(float64(ops)/msgs, "store-ops/msg")
}

// processCPU returns the user and system CPU time the test process has used.
func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
