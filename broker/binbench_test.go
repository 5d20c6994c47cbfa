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
// msg/s and the CPU time of the broker process per message (the process is stopped after its
// round), each with its spread (min and max of the rounds) and ratio to Mosquitto's, and the ratio
// of every binary to the first one named. Used to
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
		rates, cpu []float64 // msg/s and broker process CPU µs per message, per round
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
			var cmd *exec.Cmd
			if t == mosq {
				addr, cmd = startMosquittoCmd(b)
			} else {
				addr, cmd = startMQBrokerBinary(b, t.path)
			}
			t.rates = append(t.rates, runQoS1(b, addr, n).rate)
			t.cpu = append(t.cpu, float64(stopBenchProcess(cmd).Microseconds())/n)
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
	mm, _, _ := stats(mosq.rates)
	mc, _, _ := stats(mosq.cpu)
	var first, firstCPU float64
	for i, t := range all {
		mean, lo, hi := stats(t.rates)
		cpu, clo, chi := stats(t.cpu)
		b.ReportMetric(mean, t.name+"-msg/s")
		b.ReportMetric(cpu, t.name+"-cpu-µs/msg")
		b.Logf("%s: %.0f msg/s (min %.0f, max %.0f; %.3f of Mosquitto), broker CPU %.1f µs/msg (min %.1f, max %.1f; %.3f of Mosquitto) over %d rounds; msg/s %.0f",
			t.name, mean, lo, hi, mean/mm, cpu, clo, chi, cpu/mc, len(t.rates), t.rates)
		switch i {
		case 0:
		case 1:
			first, firstCPU = mean, cpu
		default:
			b.ReportMetric(mean/first, t.name+"/"+all[1].name+"-msg/s")
			b.ReportMetric(cpu/firstCPU, t.name+"/"+all[1].name+"-cpu")
		}
	}
}

// stopBenchProcess interrupts cmd, waits for it and returns the CPU time (user and system) it used.
func stopBenchProcess(cmd *exec.Cmd) time.Duration {
	_ = cmd.Process.Signal(os.Interrupt)
	_ = cmd.Wait()
	return cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
}

// startMQBrokerBinary runs an mqbroker binary in memory on a free loopback port (stopped at the end of the
// benchmark if not before).
func startMQBrokerBinary(b *testing.B, path string) (string, *exec.Cmd) {
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
			return addr, cmd
		}
		if time.Now().After(deadline) {
			b.Fatal(fmt.Sprintf("%s did not start", path))
		}
		time.Sleep(20 * time.Millisecond) // polling a port for readiness (not test synchronisation)
	}
}
