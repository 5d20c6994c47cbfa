package bench

import (
	"os"
	"testing"
	"time"
)

func TestMedianAndRange(t *testing.T) {
	for _, c := range []struct {
		in          []float64
		med, lo, hi float64
	}{
		{nil, 0, 0, 0},
		{[]float64{3}, 3, 3, 3},
		{[]float64{5, 1, 3}, 3, 1, 5},
		{[]float64{4, 1, 3, 2}, 2.5, 1, 4},
	} {
		med, lo, hi := median(c.in)
		if med != c.med || lo != c.lo || hi != c.hi {
			t.Errorf("median(%v) = %v, %v, %v; want %v, %v, %v", c.in, med, lo, hi, c.med, c.lo, c.hi)
		}
	}
}

func TestPercentileNearestRank(t *testing.T) {
	ds := make([]time.Duration, 100)
	for i := range ds {
		ds[i] = time.Duration(100-i) * time.Millisecond // unsorted on purpose
	}
	if got := percentile(ds, 50); got != 50*time.Millisecond {
		t.Errorf("p50 = %v, want 50ms", got)
	}
	if got := percentile(ds, 99); got != 99*time.Millisecond {
		t.Errorf("p99 = %v, want 99ms", got)
	}
	if got := percentile(ds[:1], 99); got != 100*time.Millisecond {
		t.Errorf("p99 of one = %v, want 100ms", got)
	}
}

func TestNum(t *testing.T) {
	for in, want := range map[float64]string{0: "0", 999: "999", 1000: "1,000", 1234567: "1,234,567", -2500: "-2,500"} {
		if got := num(in, 0); got != want {
			t.Errorf("num(%v) = %q, want %q", in, got, want)
		}
	}
	if got := num(1234.567, 2); got != "1,234.57" {
		t.Errorf("num(1234.567, 2) = %q", got)
	}
}

// The reader of /proc/<pid>/stat and /status works on this process (whose command name has no
// parentheses; the parser splits after the last one either way).
func TestProcReaders(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	if _, err := cpuTicks(os.Getpid()); err != nil {
		t.Fatal(err)
	}
	rss, hwm := memKB(os.Getpid())
	if rss <= 0 || hwm <= 0 { // VmHWM may lag VmRSS a little (see measure)
		t.Errorf("VmRSS %d KiB, VmHWM %d KiB", rss, hwm)
	}
	if _, err := cpuTicks(-1); err == nil {
		t.Error("no error for a missing process")
	}
}
