package e2e

import (
	"fmt"
	"testing"
	"time"
)

// BenchmarkPartitionedDelivery measures delivered msg/s through the real daprd (scripts/daprd.sh,
// 1.16.0 by default: one message at a time per subscription) with the telemetry subscription
// split into K partitions, K=1 and K=4 side by side, for a handler that answers at once and for
// one that works 2 ms per message (an fsync, a database write). Each iteration publishes the
// readings of 8 devices with devicesim while the app holds its first deliveries (so the backlog
// waits in the broker and the component, and publishing is not measured), then releases them and
// times until the app has every one:
//
//	go test -run '^$' -bench BenchmarkPartitionedDelivery -benchtime 1x ./tests/e2e/
//
// With MQDAPR_DAPRD_V1_15 set (see TestReceiveMaximumParallelismByDaprdVersion) it runs through
// daprd 1.15.0 as well, where Receive Maximum parallelism reaches the app even with K=1.
func BenchmarkPartitionedDelivery(b *testing.B) {
	daprds := []struct{ name, bin string }{{"daprd=1.16.0", bins.daprd}}
	if bins.daprd115 != "" {
		daprds = append(daprds, struct{ name, bin string }{"daprd=1.15.0", bins.daprd115})
	}
	for _, d := range daprds {
		for _, work := range []time.Duration{0, 2 * time.Millisecond} {
			for _, k := range []int{1, 4} {
				benchPartitioned(b, d.name, d.bin, work, k)
			}
		}
	}
}

// benchPartitioned runs one side of BenchmarkPartitionedDelivery: daprd bin, handler work, K partitions.
func benchPartitioned(b *testing.B, daprd, bin string, work time.Duration, k int) {
	b.Run(fmt.Sprintf("%s/work=%s/K=%d", daprd, work, k), func(b *testing.B) {
		count := 2000
		if work > 0 {
			count = 1000
		}
		s := newStack(b)
		app := newTestApp(b, partitionSubs(telemetryFilter, k)...)
		app.work = work
		r := s.newReplica("r1", map[string]string{"receiveMaximum": "32"})
		r.daprdBin = bin
		r.startComponents()
		r.startDaprd("connector", app.port, "http")
		waitPartitionsOpen(b, r, k)
		b.ResetTimer()
		var busy time.Duration
		for i := range b.N {
			b.StopTimer()
			holdAfter(app, i*count)
			s.devices(b, fmt.Sprintf("devsim-%d", i), "-count", fmt.Sprint(count), "-devices", "8", "-seq-start", fmt.Sprint(1+i*count))
			b.StartTimer()
			start := time.Now()
			release(app)
			waitCount(b, app, (i+1)*count, 5*time.Minute)
			busy += time.Since(start)
		}
		b.ReportMetric(float64(b.N*count)/busy.Seconds(), "msg/s")
	})
}
