package bench

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The harness in quick mode for the cheapest pair of each suite (the no-op floor and Dapr's
// in-memory component, no broker): real daprd, real component process, a report with both rows
// and every process stopped. Figures are not checked, only that they were measured.
func TestQuickRunWritesReport(t *testing.T) {
	root, err := filepath.Abs("..")
	if err != nil {
		t.Fatal(err)
	}
	cached := exec.Command(filepath.Join(root, "scripts", "daprd.sh"), "--cached")
	if err := cached.Run(); err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("scripts/daprd.sh has no daprd (make test builds it first)")
		}
		t.Skip("no daprd at hand: run scripts/daprd.sh (make test does) to enable this test")
	}
	out := filepath.Join(t.TempDir(), "BENCHMARKS.md")
	var log strings.Builder
	start := time.Now()
	err = Run(t.Context(), Config{
		Root: root, Out: out, Quick: true, Suites: []string{"pubsub", "state"},
		Contenders: []string{"noop", "in-memory"}, Command: "test", Log: &log,
	})
	if err != nil {
		t.Fatalf("Run: %v\n%s", err, log.String())
	}
	t.Logf("quick run in %s", time.Since(start).Round(time.Second))
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	report := string(b)
	for _, want := range []string{
		"| no-op pluggable (floor) | ", "| pubsub.in-memory (in daprd) | ", "| state.in-memory (in daprd) | ",
		"daprd 1.16.0", "**", // a CPU total
	} {
		if !strings.Contains(report, want) {
			t.Errorf("report lacks %q:\n%s", want, report)
		}
	}
	if strings.Contains(report, "## Failed or skipped runs") {
		t.Errorf("a run failed:\n%s\n%s", report, log.String())
	}
	// Every process the harness started has ended: no child of this test process is left.
	if kids := children(t); len(kids) > 0 {
		t.Errorf("processes left running: %v", kids)
	}
}

// children lists the pids whose parent is this process (/proc/*/stat field 4).
func children(t *testing.T) []string {
	t.Helper()
	self := os.Getpid()
	stats, _ := filepath.Glob("/proc/[0-9]*/stat")
	var out []string
	for _, p := range stats {
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(self) && f[0] != "Z" {
			out = append(out, filepath.Base(filepath.Dir(p))+" "+s[:i+1])
		}
	}
	return out
}
