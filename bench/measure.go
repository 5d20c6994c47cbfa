package bench

import (
	"os"
	"sort"
	"sync"
	"time"
)

// usage is what the processes of a stack spent while one measured step ran.
type usage struct {
	wall time.Duration
	cpu  map[string]time.Duration // user + system CPU by process name
	rss  map[string]int64         // highest VmRSS sampled during the step, KiB
	hwm  map[string]int64         // VmHWM (peak RSS since start) at the end, KiB
	self time.Duration            // the harness's own CPU (publishers, clients, subscriber app)
	// commits is how many store transactions mqbroker applied (fsyncs with a data directory);
	// -1 without mqbroker.
	commits int64
}

// measure runs step and records the wall time, each process's CPU time over it (/proc/<pid>/stat)
// and its resident memory sampled every 200 ms (/proc/<pid>/status).
func (s *stack) measure(step func() error) (usage, error) {
	pids := s.pids()
	u := usage{cpu: map[string]time.Duration{}, rss: map[string]int64{}, hwm: map[string]int64{}}
	before := map[string]int64{}
	for name, pid := range pids {
		before[name], _ = cpuTicks(pid)
	}
	commits0 := int64(-1)
	if s.brokerMetrics != "" {
		commits0 = metric(s.brokerMetrics, "mqdapr_broker_store_commits_total")
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var mu sync.Mutex // guards u.rss while the sampler runs
	wg.Add(1)
	go func() {
		defer wg.Done()
		t := time.NewTicker(200 * time.Millisecond)
		defer t.Stop()
		for {
			for name, pid := range pids {
				rss, _ := memKB(pid)
				mu.Lock()
				u.rss[name] = max(u.rss[name], rss)
				mu.Unlock()
			}
			select {
			case <-stop:
				return
			case <-t.C:
			}
		}
	}()
	self0, _ := cpuTicks(os.Getpid())
	start := time.Now()
	err := step()
	u.wall = time.Since(start)
	close(stop)
	wg.Wait()
	self1, _ := cpuTicks(os.Getpid())
	u.self = time.Duration(self1-self0) * time.Second / ticksPerSecond
	u.commits = -1
	if commits0 >= 0 {
		if c := metric(s.brokerMetrics, "mqdapr_broker_store_commits_total"); c >= 0 {
			u.commits = c - commits0
		}
	}
	for name, pid := range pids {
		after, _ := cpuTicks(pid)
		u.cpu[name] = time.Duration(after-before[name]) * time.Second / ticksPerSecond
		// The kernel updates VmHWM lazily (per-thread RSS counters are folded in batches): never
		// report a peak below a sample.
		_, hwm := memKB(pid)
		u.hwm[name] = max(hwm, u.rss[name])
	}
	return u, err
}

// idleRSS is each process's VmRSS now, KiB.
func (s *stack) idleRSS() map[string]int64 {
	out := map[string]int64{}
	for name, pid := range s.pids() {
		out[name], _ = memKB(pid)
	}
	return out
}

// median returns the median of xs (the mean of the middle two for an even count), min and max.
func median(xs []float64) (med, lo, hi float64) {
	if len(xs) == 0 {
		return 0, 0, 0
	}
	s := append([]float64(nil), xs...)
	sort.Float64s(s)
	n := len(s)
	med = s[n/2]
	if n%2 == 0 {
		med = (s[n/2-1] + s[n/2]) / 2
	}
	return med, s[0], s[n-1]
}

// percentile returns the p-th percentile (0 < p ≤ 100) of ds by the nearest-rank method.
func percentile(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(p/100*float64(len(s))+0.999999) - 1
	return s[min(max(rank, 0), len(s)-1)]
}
