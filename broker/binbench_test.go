package broker

import (
	"fmt"
	"math"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"
)

// BenchmarkBinariesVsMosquitto runs runQoS1's load (paho.golang v5, 4 publishers with 16 QoS 1
// publishes in flight each, one persistent QoS 1 subscriber, 64-byte messages) against mqbroker
// binaries built elsewhere and against Mosquitto, on loopback, each in its own process started
// fresh for every round, the order rotating round by round. It reports, for every binary, the mean
// msg/s, the spread (min and max of the rounds) and the ratio of its mean to Mosquitto's. Used to
// compare two builds side by side in one run (e.g. main's and a branch's):
//
//	(cd <main checkout> && go build -o /tmp/mqbroker-main ./cmd/mqbroker)
//	go build -o /tmp/mqbroker-branch ./cmd/mqbroker
//	MQDAPR_BENCH_MQBROKER=main=/tmp/mqbroker-main,branch=/tmp/mqbroker-branch \
//	  go test -run '^$' -bench BinariesVsMosquitto -benchtime 5x ./broker/
//
// Every binary runs in memory (no -data-dir) with -receive-maximum 1000; Mosquitto as in
// BenchmarkQoS1VsMosquitto. Without MQDAPR_BENCH_MQBROKER the benchmark is skipped.
func BenchmarkBinariesVsMosquitto(b *testing.B) {
	spec := os.Getenv("MQDAPR_BENCH_MQBROKER")
	if spec == "" {
		b.Skip("MQDAPR_BENCH_MQBROKER=name=path[,name=path...] names the mqbroker binaries to compare")
	}
	type target struct {
		name, path string
		rates      []float64
	}
	var targets []*target
	for _, kv := range strings.Split(spec, ",") {
		name, path, ok := strings.Cut(kv, "=")
		if !ok || name == "" || path == "" {
			b.Fatalf("MQDAPR_BENCH_MQBROKER: %q is not name=path", kv)
		}
		if _, err := os.Stat(path); err != nil {
			b.Fatalf("MQDAPR_BENCH_MQBROKER: %s: %v", name, err)
		}
		targets = append(targets, &target{name: name, path: path})
	}
	mosq := &target{name: "mosquitto"}
	all := append([]*target{mosq}, targets...)
	const n = 20000
	for i := range b.N {
		for j := range all {
			t := all[(i+j)%len(all)] // rotate the order round by round
			var addr string
			if t == mosq {
				addr = startMosquitto(b)
			} else {
				addr = startBinary(b, t.path)
			}
			r := runQoS1(b, addr, n)
			t.rates = append(t.rates, r.rate)
			b.Logf("round %d %s: %.0f msg/s p50 %v p99 %v", i, t.name, r.rate, r.p50, r.p99)
		}
	}
	stats := func(v []float64) (mean, lo, hi float64) {
		lo, hi = math.Inf(1), math.Inf(-1)
		for _, x := range v {
			mean += x
			lo, hi = min(lo, x), max(hi, x)
		}
		return mean / float64(len(v)), lo, hi
	}
	mm, mlo, mhi := stats(mosq.rates)
	b.ReportMetric(mm, "mosquitto-msg/s")
	b.Logf("mosquitto: mean %.0f msg/s, min %.0f, max %.0f over %d rounds", mm, mlo, mhi, len(mosq.rates))
	for _, t := range targets {
		mean, lo, hi := stats(t.rates)
		b.ReportMetric(mean, t.name+"-msg/s")
		b.ReportMetric(mean/mm, t.name+"/mosquitto")
		b.Logf("%s: mean %.0f msg/s, min %.0f, max %.0f over %d rounds; %.3f of Mosquitto", t.name, mean, lo, hi, len(t.rates), mean/mm)
	}
}

// startBinary runs an mqbroker binary in memory on a free loopback port until the benchmark ends.
func startBinary(b *testing.B, path string) string {
	addr := freePort(b)
	cmd := exec.Command(path, "-addr", addr, "-receive-maximum", "1000", "-log-level", "warn")
	cmd.Stderr = os.Stderr
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
			b.Fatal(fmt.Sprintf("%s did not start", path))
		}
		time.Sleep(20 * time.Millisecond) // polling a port for readiness (not test synchronisation)
	}
}
