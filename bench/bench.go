// Package bench is the side-by-side benchmark harness behind `make bench` and BENCHMARKS.md: it
// runs mqdapr's components and their peers (Dapr's in-tree components, redis-server, Mosquitto)
// and a no-op pluggable floor through the same daprd binary, each contender in a fresh stack of
// real processes on loopback, the contenders alternated round by round, and writes the medians,
// ranges, ratios, CPU per message by process and memory of each process.
//
// Every run is bounded in messages and in time, every process is stopped at the end of its round
// (also on failure or Ctrl-C; a harness killed outright takes them with it, see
// devstack.StartCmd), and nothing is asserted on the figures: a failed round is reported as such.
package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"sync"
	"time"
)

// Config selects what runs.
type Config struct {
	Root       string   // the repository (its scripts/ and the packages to build)
	Out        string   // the report (BENCHMARKS.md); "" writes none
	Quick      bool     // one round, few messages: a smoke run, not figures
	Rounds     int      // 0: 3, or 1 when Quick
	Suites     []string // "pubsub", "state", "connector"; empty: all
	Contenders []string // contender ids (noop, in-memory, mqttv5-mosquitto, …); empty: all
	Daprd115   bool     // also run on daprd 1.15.0 when scripts/daprd.sh has it without building
	// PubsubB is a second pubsub-mqtt5 binary (another build, e.g. main's) to compare with the one
	// built from Root: every selected pubsub.mqttv5 contender also runs with it, as "<id>-b",
	// alternated with the others round by round. "" runs none.
	PubsubB string
	// ConnectorApps are other builds of the connector app (label → binary, e.g. main's), each a
	// contender "connector@<label>" / "connector-part<K>@<label>" beside this checkout's app.
	ConnectorApps map[string]string
	// ConnectorPartitions are the -telemetry-partitions counts the connector runs with, one
	// contender each ("connector" for 1, "connector-part<K>" otherwise); empty: 1 and 8 (make run's).
	ConnectorPartitions []int
	Command             string    // the command line, printed in the report
	Note                string    // a line for the report's header (e.g. what else ran on the machine)
	Log                 io.Writer // progress lines
}

func (c *Config) rounds() int {
	switch {
	case c.Rounds > 0:
		return c.Rounds
	case c.Quick:
		return 1
	}
	return 3
}

// The sizes of the runs: bounded counts, small in quick mode.
func (c *Config) pubsubMessages() int { return c.pick(300, 3000) }
func (c *Config) singleMessages() int { return c.pick(100, 500) }
func (c *Config) connectorReadings() int {
	return c.pick(300, 3000)
}
func (c *Config) stateOps(op string) int {
	switch op {
	case "etag":
		return c.pick(100, 1000)
	case "bulkget":
		return c.pick(16, 60)
	}
	return c.pick(200, 2000)
}

// phaseTimeout bounds one measured step (a slow contender fails its round instead of hanging).
func (c *Config) phaseTimeout() time.Duration {
	return time.Duration(c.pick(60, 180)) * time.Second
}

func (c *Config) pick(quick, full int) int {
	if c.Quick {
		return quick
	}
	return full
}

func (c *Config) wants(list []string, v string) bool {
	if len(list) == 0 {
		return true
	}
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// daprdBinary is one daprd the contenders run through.
type daprdBinary struct {
	version string
	path    string
}

// harness is one benchmark run.
type harness struct {
	cfg   Config
	work  string // temporary folder: the stacks' data and logs
	bins  string // the project's binaries, built for this run
	tools struct {
		mosquitto, redis string
	}
	daprd    daprdBinary  // 1.16.0, the default
	daprd115 *daprdBinary // nil when not at hand
	notes    []string     // said at the top of the report
	res      results
}

func (h *harness) bin(name string) string {
	if name == "state-kv-base" {
		return os.Getenv(baseStateKV)
	}
	return filepath.Join(h.bins, name)
}

func (h *harness) logf(format string, args ...any) {
	if h.cfg.Log != nil {
		fmt.Fprintf(h.cfg.Log, "[bench %s] "+format+"\n", append([]any{time.Now().UTC().Format("15:04:05")}, args...)...)
	}
}

// Run builds the project's programs, runs the selected suites and writes the report. ctx ends the
// run early (Ctrl-C): the processes of the current round are stopped and the report is written
// with what was measured.
func Run(ctx context.Context, cfg Config) error {
	started := time.Now()
	h := &harness{cfg: cfg, res: results{m: map[string]map[string][]float64{}, fails: map[string][]string{}}}
	work, err := os.MkdirTemp("", "mqdapr-bench-")
	if err != nil {
		return err
	}
	h.work, h.bins = work, filepath.Join(work, "bin")
	defer func() { // the processes' logs stay when a round failed: the failures point into them
		if len(h.res.fails) > 0 {
			h.logf("a round failed: logs kept in %s", work)
			return
		}
		os.RemoveAll(work)
	}()
	load0 := loadAverage()
	if err := h.setup(ctx); err != nil {
		return err
	}
	if cfg.wants(cfg.Suites, "pubsub") {
		h.pubsubSuite(ctx)
	}
	if cfg.wants(cfg.Suites, "state") {
		h.stateSuite(ctx)
	}
	if cfg.wants(cfg.Suites, "connector") {
		h.connectorSuite(ctx)
	}
	if ctx.Err() != nil {
		h.notes = append(h.notes, fmt.Sprintf("**Interrupted** (%v): only what was measured before is reported.", context.Cause(ctx)))
	}
	if cfg.Out == "" {
		return nil
	}
	report := h.report(started, load0, loadAverage())
	if err := os.WriteFile(cfg.Out, []byte(report), 0o644); err != nil {
		return fmt.Errorf("write %s: %w", cfg.Out, err)
	}
	h.logf("wrote %s (%s)", cfg.Out, time.Since(started).Round(time.Second))
	return nil
}

// setup builds the programs and finds daprd, Mosquitto and redis-server.
func (h *harness) setup(ctx context.Context) error {
	h.logf("building the programs into %s", h.bins)
	build := exec.CommandContext(ctx, "go", "build", "-o", h.bins+"/",
		"./cmd/mqbroker", "./cmd/pubsub-mqtt5", "./cmd/state-kv", "./cmd/devicesim", "./app", "./bench/noop")
	build.Dir, build.Stdout, build.Stderr = h.cfg.Root, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		return fmt.Errorf("go build: %w", err)
	}
	out, err := exec.CommandContext(ctx, filepath.Join(h.cfg.Root, "scripts", "daprd.sh")).Output()
	if err != nil {
		return fmt.Errorf("scripts/daprd.sh (daprd 1.16.0): %w", err)
	}
	h.daprd = daprdBinary{version: daprdVersion(strings.TrimSpace(string(out))), path: strings.TrimSpace(string(out))}
	if h.cfg.Daprd115 {
		cmd := exec.CommandContext(ctx, filepath.Join(h.cfg.Root, "scripts", "daprd.sh"), "--cached")
		cmd.Env = append(os.Environ(), "DAPRD_VERSION=v1.15.0")
		if out, err := cmd.Output(); err == nil {
			p := strings.TrimSpace(string(out))
			h.daprd115 = &daprdBinary{version: daprdVersion(p), path: p}
		} else {
			h.notes = append(h.notes, "daprd 1.15.0 was not ready (`DAPRD_VERSION=v1.15.0 scripts/daprd.sh` builds it once, ~15 min): its rows are missing.")
		}
	}
	for _, p := range []string{"mosquitto", "/usr/sbin/mosquitto"} {
		if path, err := exec.LookPath(p); err == nil {
			h.tools.mosquitto = path
			break
		}
	}
	for _, p := range []string{"redis-server", "/usr/bin/redis-server"} {
		if path, err := exec.LookPath(p); err == nil {
			h.tools.redis = path
			break
		}
	}
	return nil
}

// roundRobin runs each contender once per round, the order rotated by one every round, so that
// no contender always runs first or after the same neighbour.
func (h *harness) roundRobin(ctx context.Context, suite string, ids []string, run func(ctx context.Context, i, round int) error) {
	for round := range h.cfg.rounds() {
		for k := range ids {
			if ctx.Err() != nil {
				return
			}
			i := (k + round) % len(ids)
			h.logf("%s round %d/%d: %s", suite, round+1, h.cfg.rounds(), ids[i])
			t0 := time.Now()
			if err := run(ctx, i, round); err != nil {
				if ctx.Err() != nil { // interrupted: said once at the top of the report
					return
				}
				h.logf("%s %s round %d failed: %v", suite, ids[i], round+1, err)
				h.res.fail(ids[i], fmt.Sprintf("round %d: %v", round+1, err))
				continue
			}
			h.logf("%s %s done in %s", suite, ids[i], time.Since(t0).Round(100*time.Millisecond))
		}
	}
}

// missing says why a contender cannot run here, or "".
func (h *harness) missing(b brokerKind) string {
	switch {
	case b == mosquitto && h.tools.mosquitto == "":
		return "mosquitto not found (scripts/install-test-deps.sh installs it)"
	case (b == redisMemory || b == redisAOF) && h.tools.redis == "":
		return "redis-server not found (scripts/install-bench-deps.sh installs it)"
	}
	return ""
}

// daprds are the daprd binaries a suite runs on: 1.16.0, and 1.15.0 when at hand.
func (h *harness) daprds() []daprdBinary {
	out := []daprdBinary{h.daprd}
	if h.daprd115 != nil {
		out = append(out, *h.daprd115)
	}
	return out
}

// key is a results key: the id, with the daprd version unless it is the default one.
func (h *harness) key(id string, d daprdBinary) string {
	if d.version == h.daprd.version {
		return id
	}
	return id + "@" + d.version
}

func (h *harness) pubsubSuite(ctx context.Context) {
	var runs []*pubsubRun
	var ids []string
	for _, d := range h.daprds() {
		for _, c := range h.pubsubContenders() {
			key := h.key(c.id, d)
			if !h.cfg.wants(h.cfg.Contenders, c.id) && !h.cfg.wants(h.cfg.Contenders, c.base) || (d != h.daprd && !c.onDaprd15) {
				continue
			}
			if why := h.missing(c.broker); why != "" {
				h.res.fail(key, why)
				continue
			}
			runs = append(runs, &pubsubRun{h: h, c: c, daprd: d, key: key})
			ids = append(ids, key)
		}
	}
	h.roundRobin(ctx, "pubsub", ids, func(ctx context.Context, i, round int) error { return runs[i].run(ctx, round) })
}

func (h *harness) stateSuite(ctx context.Context) {
	var runs []*stateRun
	var ids []string
	for _, c := range stateContenders {
		if !h.cfg.wants(h.cfg.Contenders, c.id) {
			continue
		}
		if why := h.missing(c.broker); why != "" {
			h.res.fail(c.id, why)
			continue
		}
		runs = append(runs, &stateRun{h: h, c: c, daprd: h.daprd})
		ids = append(ids, c.id)
	}
	h.roundRobin(ctx, "state", ids, func(ctx context.Context, i, round int) error { return runs[i].run(ctx, round) })
}

// connectorPartitions are the partition counts of the connector's runs (Config.ConnectorPartitions).
func (c *Config) connectorPartitions() []int {
	if len(c.ConnectorPartitions) == 0 {
		return []int{1, 8}
	}
	return c.ConnectorPartitions
}

// connectorID is the contender id of the connector on k partitions.
func connectorID(k int) string {
	if k > 1 {
		return fmt.Sprintf("connector-part%d", k)
	}
	return "connector"
}

func (h *harness) connectorSuite(ctx context.Context) {
	var runs []*connectorRun
	var ids []string
	for _, d := range h.daprds() {
		apps := []string{""}
		for label := range h.cfg.ConnectorApps {
			apps = append(apps, label)
		}
		sort.Strings(apps[1:])
		for _, k := range h.cfg.connectorPartitions() {
			for _, label := range apps {
				id := connectorID(k)
				bin := h.bin("app")
				if label != "" {
					id, bin = id+"@"+label, h.cfg.ConnectorApps[label]
				}
				if !h.cfg.wants(h.cfg.Contenders, id) {
					continue
				}
				key := h.key(id, d)
				runs = append(runs, &connectorRun{h: h, daprd: d, key: key, partitions: k, app: bin})
				ids = append(ids, key)
			}
		}
	}
	h.roundRobin(ctx, "connector", ids, func(ctx context.Context, i, round int) error { return runs[i].run(ctx, round) })
}

// results are the samples of every contender: key → metric → one value per round.
type results struct {
	mu    sync.Mutex
	m     map[string]map[string][]float64
	fails map[string][]string
}

func (r *results) add(key, metric string, v float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.m[key] == nil {
		r.m[key] = map[string][]float64{}
	}
	r.m[key][metric] = append(r.m[key][metric], v)
}

func (r *results) fail(key, why string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.fails[key] = append(r.fails[key], why)
}

// get returns the samples of one metric.
func (r *results) get(key, metric string) []float64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.m[key][metric]
}

// byProcess returns the processes that have samples of prefix/<process>, in a fixed order.
func (r *results) byProcess(key, prefix string) []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for metric := range r.m[key] {
		if name, ok := strings.CutPrefix(metric, prefix+"/"); ok {
			out = append(out, name)
		}
	}
	order := map[string]int{"daprd": 0, "app": 1, "noop": 2, "pubsub-mqtt5": 2, "state-kv": 3, "mqbroker": 4, "mosquitto": 4, "redis-server": 4}
	sort.Slice(out, func(i, j int) bool {
		if order[out[i]] != order[out[j]] {
			return order[out[i]] < order[out[j]]
		}
		return out[i] < out[j]
	})
	return out
}

// daprdVersion is what daprd --version prints.
func daprdVersion(path string) string {
	out, err := exec.Command(path, "--version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
}

// loadAverage is /proc/loadavg's first three fields.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

// machine describes the CPU: cores and model.
func machine() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				model = strings.TrimSpace(v)
				break
			}
		}
	}
	return fmt.Sprintf("%d cores (runtime.NumCPU), %s, %s/%s", runtime.NumCPU(), model, runtime.GOOS, runtime.GOARCH)
}
