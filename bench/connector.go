package bench

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/mqdapr/mqdapr/internal/devstack"
)

// connectorRun is one round of the sample connector (app/) as `make run` runs it: mqbroker with a
// data directory, both components, daprd and the app; devicesim publishes a bounded number of
// readings from 8 devices as fast as the broker acknowledges them, and the run lasts until the
// app has written every row to the lake (durable, exactly once: checked in the lake afterwards).
type connectorRun struct {
	h     *harness
	daprd daprdBinary
	key   string
	// partitions > 1 runs the app with -telemetry-partitions (partitioned subscriptions, handled
	// in parallel through daprd 1.16's serial dispatch); 1 is `make run`'s default.
	partitions int
	app        string // the app binary
}

func (r *connectorRun) run(ctx context.Context, round int) error {
	h := r.h
	s, err := h.newStack("connector")
	if err != nil {
		return err
	}
	defer s.close()
	if err := s.startBroker(ctx, mqbrokerDisk); err != nil {
		return err
	}
	for _, program := range []string{"pubsub-mqtt5", "state-kv"} {
		if err := s.startComponent(ctx, program); err != nil {
			return err
		}
	}
	url := "mqtt://" + s.brokerAt
	if err := s.component("mqtt", "pubsub.mqttv5", map[string]string{"url": url, "clientID": "replica-0", "stateDir": filepath.Join(s.dir, "state", "pubsub")}); err != nil {
		return err
	}
	if err := s.component("kv", "state.mqttkv", map[string]string{"url": url, "clientID": "replica-0"}); err != nil {
		return err
	}
	ports, err := freePorts(3)
	if err != nil {
		return err
	}
	appPort, healthPort := ports[0], ports[1]
	s.daprGRPC = ports[2]
	lake := filepath.Join(s.dir, "lake")
	health := fmt.Sprintf("http://127.0.0.1:%d", healthPort)
	app, err := s.ps.start(s.dir, "app", "app", nil, r.app,
		"-app-port", fmt.Sprint(appPort), "-dapr-grpc-port", fmt.Sprint(s.daprGRPC),
		"-health-addr", fmt.Sprintf("127.0.0.1:%d", healthPort), "-lake", lake, "-replica", "replica-0", "-log-level", "warn",
		"-telemetry-partitions", fmt.Sprint(r.partitions))
	if err != nil {
		return err
	}
	if err := app.ready(ctx, 30*time.Second, devstack.WaitHTTP(health+"/healthz")); err != nil {
		return err
	}
	if err := s.startDaprd(ctx, r.daprd.path, appPort); err != nil {
		return err
	}
	devices := func(ctx context.Context, clientID string, args ...string) error {
		p, err := s.ps.start(s.dir, clientID, "publisher", nil, h.bin("devicesim"),
			append([]string{"-broker", url, "-client-id", clientID, "-rate", "0", "-devices", fmt.Sprint(publishers)}, args...)...)
		if err != nil {
			return err
		}
		select {
		case <-p.done:
			if c := p.cmd.ProcessState.ExitCode(); c != 0 {
				return fmt.Errorf("devicesim exited with %d (see %s)", c, p.log)
			}
			return nil
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(h.cfg.phaseTimeout()):
			return fmt.Errorf("devicesim did not finish within %s", h.cfg.phaseTimeout())
		}
	}
	// Warm-up: until the app's subscription reaches the broker, a reading finds no subscriber
	// and is discarded; publish one reading at a time until one is written.
	deadline := time.Now().Add(60 * time.Second)
	for seq := 0; counter(health, "written") < 1; seq++ {
		if time.Now().After(deadline) {
			return fmt.Errorf("warm-up: no row written within 60 s (see %s)", s.dir)
		}
		if err := devices(ctx, "warm", "-count", "1", "-seq-start", fmt.Sprint(seq)); err != nil {
			return err
		}
		if waitCounter(ctx, health, "written", 1, 2*time.Second) == nil {
			break
		}
	}
	for name, kb := range s.idleRSS() {
		h.res.add(r.key, "rss-idle/"+name, float64(kb)/1024)
	}
	n := h.cfg.connectorReadings()
	base := counter(health, "written")
	// Device ids and sequence numbers differ from the warm-up's, so every reading is a new row.
	// The devices publish at once (-inflight, as the pub/sub runs' publishers), each in order: one
	// publish at a time would measure the publisher's round trip to the durable broker, not the
	// connector. published/s is how fast the broker took them: rows/s below it is the connector's.
	var published time.Duration
	u, err := s.measure(func() error {
		t0 := time.Now()
		if err := devices(ctx, "devsim", "-count", fmt.Sprint(n), "-seq-start", "1000000", "-publish-config=false", "-inflight", fmt.Sprint(publishers)); err != nil {
			return err
		}
		published = time.Since(t0)
		return waitCounter(ctx, health, "written", base+n, h.cfg.phaseTimeout())
	})
	if err != nil {
		return err
	}
	h.res.add(r.key, "rows/s", float64(n)/u.wall.Seconds())
	h.res.add(r.key, "published/s", float64(n)/published.Seconds())
	if u.commits >= 0 {
		h.res.add(r.key, "commits", float64(u.commits)/float64(n))
	}
	for name, cpu := range u.cpu {
		if name == "devsim" {
			continue
		}
		h.res.add(r.key, "cpu/"+name, float64(cpu.Microseconds())/float64(n))
	}
	for name, kb := range u.rss {
		if name != "devsim" {
			h.res.add(r.key, "rss-load/"+name, float64(kb)/1024)
			h.res.add(r.key, "rss-peak/"+name, float64(u.hwm[name])/1024)
		}
	}
	rows, dups := lakeRows(lake)
	if rows != base+n || dups != 0 {
		h.res.fail(r.key, fmt.Sprintf("round %d: %d distinct rows in the lake with %d duplicates, want %d and 0", round+1, rows, dups, base+n))
		h.res.add(r.key, "exactly-once", 0)
	} else {
		h.res.add(r.key, "exactly-once", 1)
	}
	return nil
}

// counter reads one of the app's counters (mqdapr_connector_<name>_total) from /metrics; -1 when
// it cannot be read.
func counter(base, name string) int {
	return int(metric(base+"/metrics", "mqdapr_connector_"+name+"_total"))
}

// metric reads one unlabelled value of a Prometheus text page; -1 when it cannot be read.
func metric(url, name string) int64 {
	resp, err := http.Get(url)
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 2 && f[0] == name {
			// client_golang writes large counters in exponent form (1.234567e+06).
			n, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return -1
			}
			return int64(n)
		}
	}
	return -1
}

// waitCounter polls the counter until it reaches want.
func waitCounter(ctx context.Context, base, name string, want int, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		got := counter(base, name)
		if got >= want {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %d of %d within %s", name, got, want, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond): // polling interval
		}
	}
}

// lakeRows counts the distinct reading ids in the lake's JSON-lines files and the rows beyond one
// per id.
func lakeRows(lake string) (distinct, dups int) {
	seen := map[string]bool{}
	_ = filepath.Walk(lake, func(path string, info os.FileInfo, err error) error {
		if err != nil || info.IsDir() || !strings.HasSuffix(path, ".jsonl") {
			return nil
		}
		f, err := os.Open(path)
		if err != nil {
			return nil
		}
		defer f.Close()
		sc := bufio.NewScanner(f)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			var row struct {
				ID string `json:"id"`
			}
			if json.Unmarshal(sc.Bytes(), &row) == nil && row.ID != "" {
				if seen[row.ID] {
					dups++
				}
				seen[row.ID] = true
			}
		}
		return nil
	})
	return len(seen), dups
}
