package e2e

// The fault matrix: one stream of QoS 1 readings through the whole chain (a paho.golang publisher →
// mqbroker with a data directory → pubsub.mqttv5 → daprd → the sample connector app → the lake,
// with state.mqttkv in use), while processes are killed with kill -9 at random moments drawn from
// a seed. Every reading the broker acknowledged (PUBACK) must be in the lake exactly once.
//
// Settings (environment):
//
//	MQDAPR_FAULT_SEED     the seed of the fault order and moments (default: the clock; printed)
//	MQDAPR_FAULT_READINGS readings in the stream (default 10000)
//	MQDAPR_FAULT_RATE     readings per second the publisher offers (default 100)
//	MQDAPR_FAULT_REPEATS  injections of each kill (default 3)
//	MQDAPR_FAULT_LONG_REPEATS injections of each fault that lasts, frozen or unreachable broker
//	                      (default 1: 50 s of outage in `make test`; `make chaos` sets 3)
//	MQDAPR_FAULT_REPLICA_READINGS, MQDAPR_FAULT_SLOW_READINGS the streams of the replica and the
//	                      slow-consumer tests (default 3000, 2000)
//	MQDAPR_FAULT_ONLY     only the faults whose name contains one of these comma-separated words
//	MQDAPR_FAULT_REPORT   write the Markdown report there (relative: to the repository root)

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

// faultKind is one fault of the matrix: inject kills (or freezes), the fault lasts (0: a kill
// healed at once), restart brings the chain back as production does (a supervisor restarting what
// died; daprd with a component, since daprd does not re-initialise a component that restarted).
type faultKind struct {
	name    string
	inject  func(c *connectorReplica)
	lasts   time.Duration
	restart func(c *connectorReplica)
}

// With partitions, the components run in a network namespace of their own (newAuthStackOn) and the
// matrix has a network partition between them and the broker.
func faultKinds(partitions bool) []faultKind {
	restartComponent := func(c *connectorReplica, which string) {
		switch which {
		case "pubsub":
			c.startPubsub()
		case "state":
			c.startState()
		}
		c.startDaprd("connector", c.appPort, "grpc")
	}
	signal := func(c *connectorReplica, sig syscall.Signal) {
		require.NoError(c.s.t, c.s.broker.cmd.Process.Signal(sig), "signal %s to the broker", sig)
	}
	// The crash case of the correctness issue: a client resumed its session (the broker rewrote
	// the session record on CONNECT) and has not subscribed again yet, when the broker dies. The
	// restarted pub/sub component and daprd come up without the app, so that daprd, which
	// subscribes once the app is there, leaves the component in that window until the broker
	// has been killed and restarted; the readings queued in the session meanwhile must survive.
	resumedThenBrokerCrash := func(c *connectorReplica) {
		t, s := c.s.t, c.s
		const resumed = "(session present: true)"                      // mqttconn's log line on connecting
		const subscribed = "app is subscribed to the following topics" // daprd 1.16, processor/subscriber
		before, subsBefore := logCount(c.pubsub.log, resumed), logCount(c.daprd.log, subscribed)
		c.startPubsub()
		c.startDaprdNoWait("connector", c.appPort, "grpc")
		require.Eventually(t, func() bool { return logCount(c.pubsub.log, resumed) > before }, 60*time.Second, 20*time.Millisecond,
			"the restarted pub/sub component resumes its session")
		require.Equal(t, subsBefore, logCount(c.daprd.log, subscribed), "daprd has not subscribed yet")
		s.broker.kill(syscall.SIGKILL)
		s.startBroker()
		c.startApp()
		c.waitDaprd()
	}
	kinds := []faultKind{
		{"kill -9 app",
			func(c *connectorReplica) { c.app.kill(syscall.SIGKILL) }, 0,
			func(c *connectorReplica) { c.startApp() }},
		{"kill -9 pubsub.mqttv5 (+ daprd)",
			func(c *connectorReplica) { c.pubsub.kill(syscall.SIGKILL); c.daprd.kill(syscall.SIGKILL) }, 0,
			func(c *connectorReplica) { restartComponent(c, "pubsub") }},
		{"kill -9 state.mqttkv (+ daprd)",
			func(c *connectorReplica) { c.state.kill(syscall.SIGKILL); c.daprd.kill(syscall.SIGKILL) }, 0,
			func(c *connectorReplica) { restartComponent(c, "state") }},
		{"kill -9 daprd",
			func(c *connectorReplica) { c.daprd.kill(syscall.SIGKILL) }, 0,
			func(c *connectorReplica) { c.startDaprd("connector", c.appPort, "grpc") }},
		{"kill -9 mqbroker (durable data dir)",
			func(c *connectorReplica) { c.s.broker.kill(syscall.SIGKILL) }, 0,
			func(c *connectorReplica) { c.s.startBroker() }},
		{"session resumed without resubscribing, then kill -9 mqbroker (app, pubsub.mqttv5, daprd killed first)",
			func(c *connectorReplica) {
				c.app.kill(syscall.SIGKILL)
				c.pubsub.kill(syscall.SIGKILL)
				c.daprd.kill(syscall.SIGKILL)
			}, 0, resumedThenBrokerCrash},
		{"mqbroker frozen (SIGSTOP) 20 s",
			func(c *connectorReplica) { signal(c, syscall.SIGSTOP) }, 20 * time.Second,
			func(c *connectorReplica) { signal(c, syscall.SIGCONT) }},
		{"mqbroker unreachable 30 s (kill -9, restarted after)",
			func(c *connectorReplica) { c.s.broker.kill(syscall.SIGKILL) }, 30 * time.Second,
			func(c *connectorReplica) { c.s.startBroker() }},
	}
	if partitions {
		kinds = append(kinds, faultKind{"network partition components ↔ mqbroker 20 s (packets dropped both ways)",
			func(c *connectorReplica) { c.s.net.partition() }, 20 * time.Second,
			func(c *connectorReplica) { c.s.net.heal() }})
	}
	return kinds
}

// faultRun is one injection and what followed.
type faultRun struct {
	kind               string
	at                 time.Time
	offset             time.Duration // since the start of the test
	recovery           time.Duration
	fromAcked, toAcked int // accepted readings [from, to) between the fault and the recovery
}

func envInt(t *testing.T, name string, def int64) int64 {
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.ParseInt(v, 10, 64)
	require.NoError(t, err, "%s=%q: want an integer", name, v)
	require.Positive(t, n, "%s=%q: want a positive integer", name, v)
	return n
}

// acked is the publisher's record: reading ids in the order the broker acknowledged them.
type acked struct {
	mu  sync.Mutex
	ids []string
}

func (a *acked) add(id string) { a.mu.Lock(); a.ids = append(a.ids, id); a.mu.Unlock() }
func (a *acked) len() int      { a.mu.Lock(); defer a.mu.Unlock(); return len(a.ids) }
func (a *acked) all() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]string(nil), a.ids...)
}

// dialPublisher connects the stream's publisher: a persistent session, so that what is in flight at
// a disconnection is sent again after reconnecting.
func dialPublisher(t *testing.T, s *stack) *autopaho.ConnectionManager {
	u, err := url.Parse(strings.Replace(s.mqttURL(), "mqtt://", "tcp://", 1))
	require.NoError(t, err)
	cfg := autopaho.ClientConfig{
		ServerUrls: []*url.URL{u}, KeepAlive: 10, CleanStartOnInitialConnection: false,
		SessionExpiryInterval: 3600, ConnectTimeout: 5 * time.Second, ConnectRetryDelay: 200 * time.Millisecond,
		ClientConfig: paho.ClientConfig{ClientID: "faults-publisher"},
	}
	if s.auth {
		cfg.ConnectUsername, cfg.ConnectPassword = devicesUser, []byte(s.password(t, devicesUser))
	}
	cm, err := autopaho.NewConnection(context.Background(), cfg)
	require.NoError(t, err)
	t.Cleanup(func() {
		dctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = cm.Disconnect(dctx)
	})
	return cm
}

// warmUp publishes one probe reading at a time (device fwarm) until one is written: until the
// app's subscription reaches the broker, a reading finds no subscriber and is discarded.
func warmUp(t *testing.T, cm *autopaho.ConnectionManager, lake string) {
	deadline := time.Now().Add(90 * time.Second)
	for seq := 1; ; seq++ {
		require.True(t, time.Now().Before(deadline), "warm-up: no row written within 90 s")
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		require.NoError(t, cm.AwaitConnection(ctx), "warm-up: the publisher's connection")
		_, err := cm.Publish(ctx, &paho.Publish{QoS: 1, Topic: "devices/fwarm/telemetry",
			Payload: []byte(fmt.Sprintf(`{"deviceId":"fwarm","seq":%d,"ts":%d,"metrics":{"temperature":{"value":1,"unit":"C"}}}`, seq, time.Now().UnixMilli()))})
		cancel()
		require.NoError(t, err, "warm-up publish")
		probe := time.Now().Add(2 * time.Second)
		for time.Now().Before(probe) {
			if lakeBytes(lake) > 0 {
				return
			}
			time.Sleep(20 * time.Millisecond) // polling interval
		}
	}
}

// faultPublisher publishes readings at rate per second at QoS 1, each until the broker acknowledges
// it (a reading whose publish failed is sent again, the same id): at least n, and on until gate is
// closed (after the last fault), so that rows keep coming while faults are injected.
func faultPublisher(ctx context.Context, t *testing.T, cm *autopaho.ConnectionManager, n int, rate float64, gate <-chan struct{}, rec *acked) error {
	tick := time.NewTicker(time.Duration(float64(time.Second) / rate)) // the offered load, not synchronisation
	defer tick.Stop()
	const devices = 8
	for i := 0; ; i++ {
		if i >= n {
			select {
			case <-gate:
				return nil
			default:
			}
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			return ctx.Err()
		}
		dev, seq := fmt.Sprintf("fdev-%02d", i%devices), 1+i/devices
		payload := fmt.Sprintf(`{"deviceId":%q,"seq":%d,"ts":%d,"metrics":{"temperature":{"value":%d.5,"unit":"C"}}}`,
			dev, seq, time.Now().UnixMilli(), 20+i%10)
		pub := &paho.Publish{QoS: 1, Topic: "devices/" + dev + "/telemetry", Payload: []byte(payload)}
		for attempt := 0; ; attempt++ {
			if err := cm.AwaitConnection(ctx); err != nil {
				return err
			}
			pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
			res, err := cm.Publish(pctx, pub)
			cancel()
			if err == nil && res != nil && res.ReasonCode < 0x80 {
				rec.add(fmt.Sprintf("%s/%d", dev, seq))
				break
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if err == nil && res != nil && res.ReasonCode != 0x97 { // anything but quota exceeded is a failure
				return fmt.Errorf("reading %s/%d refused: reason code 0x%02x", dev, seq, res.ReasonCode)
			}
			if attempt == 0 {
				t.Logf("publisher: reading %s/%d not acknowledged (%v); sending it again", dev, seq, err)
			}
			select { // again at the offered rate (a refusal with 0x97 is answered at once)
			case <-tick.C:
			case <-ctx.Done():
				return ctx.Err()
			}
		}
	}
}

// lakeBytes is the total size of the lake's files: it grows with every row written.
func lakeBytes(lake string) int64 {
	var n int64
	_ = filepath.Walk(lake, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() && strings.HasSuffix(path, ".jsonl") {
			n += info.Size()
		}
		return nil
	})
	return n
}

// waitLakeGrows waits until the lake grows beyond base and returns when it did.
func waitLakeGrows(t *testing.T, lake string, base int64, timeout time.Duration) time.Time {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if lakeBytes(lake) > base {
			return time.Now()
		}
		if time.Now().After(deadline) {
			t.Fatalf("no row written within %s", timeout)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// The fault matrix (see the top of the file): every fault MQDAPR_FAULT_REPEATS times, in an order
// and at moments drawn from the seed, during one stream; afterwards no accepted reading is missing
// from the lake and no reading has two rows.
func TestFaultMatrix(t *testing.T) {
	needDaprd(t)
	seed := faultSeed(t)
	n := int(envInt(t, "MQDAPR_FAULT_READINGS", 10000))
	rate := float64(envInt(t, "MQDAPR_FAULT_RATE", 100))
	repeats := int(envInt(t, "MQDAPR_FAULT_REPEATS", 3))
	longRepeats := int(envInt(t, "MQDAPR_FAULT_LONG_REPEATS", 1))
	t.Logf("fault matrix: seed %d (replay: MQDAPR_FAULT_SEED=%d), %d readings at %.0f/s, each kill %d times, each lasting fault %d times",
		seed, seed, n, rate, repeats, longRepeats)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	net, err := newCompNet(t)
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("the network partition needs a network namespace: %v", err)
		}
		t.Logf("the network partition is left out: %v", err)
	}
	kinds := faultKinds(net != nil)
	if only := os.Getenv("MQDAPR_FAULT_ONLY"); only != "" {
		var kept []faultKind
		for _, k := range kinds {
			for _, w := range strings.Split(only, ",") {
				if w != "" && strings.Contains(k.name, w) {
					kept = append(kept, k)
					break
				}
			}
		}
		require.NotEmpty(t, kept, "MQDAPR_FAULT_ONLY=%q matches no fault name", only)
		kinds = kept
	}
	var order []int
	for k := range kinds {
		times := repeats
		if kinds[k].lasts > 0 {
			times = longRepeats
		}
		for range times {
			order = append(order, k)
		}
	}
	rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })

	began := time.Now()
	var s *stack
	if net != nil {
		s = newAuthStackOn(t, net)
	} else {
		s = newAuthStack(t)
	}
	lake := filepath.Join(s.dir, "lake")
	c := s.startConnector("replica-1", lake)

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cm := dialPublisher(t, s)
	warmUp(t, cm, lake)
	gate := make(chan struct{})
	rec := &acked{}
	pubDone := make(chan error, 1)
	go func() { pubDone <- faultPublisher(ctx, t, cm, n, rate, gate, rec) }()

	// Three quarters of the stream's length over the gaps: the restarts take time too.
	meanGap := time.Duration(0.75 * float64(n) / rate * float64(time.Second) / float64(len(order)+1))
	var runs []faultRun
	for i, k := range order {
		// The random moment (the experiment, not synchronisation): after the previous recovery, a
		// gap drawn uniformly from [0.5, 1.5] × the stream's length / (faults + 1), at least 1 s, so
		// that the faults spread over the stream.
		time.Sleep(max(time.Second, time.Duration(float64(meanGap)*(0.5+rng.Float64()))))
		select {
		case err := <-pubDone:
			t.Fatalf("the publisher ended before fault %d: %v", i+1, err)
		default:
		}
		t.Logf("fault %2d/%d: %s", i+1, len(order), kinds[k].name)
		f := faultRun{kind: kinds[k].name, at: time.Now(), offset: time.Since(began), fromAcked: rec.len()}
		kinds[k].inject(c)
		if d := kinds[k].lasts; d > 0 {
			time.Sleep(d)     // how long the fault lasts: the experiment, not synchronisation
			f.at = time.Now() // recovery counts from the healing
		}
		kinds[k].restart(c)
		if i == len(order)-1 {
			close(gate)
		}
		written := waitLakeGrows(t, lake, lakeBytes(lake), 120*time.Second)
		f.recovery, f.toAcked = written.Sub(f.at), rec.len()
		t.Logf("fault %2d/%d at %5.1fs: %s: recovered in %s", i+1, len(order), f.offset.Seconds(), f.kind,
			f.recovery.Round(time.Millisecond))
		runs = append(runs, f)
	}

	select {
	case err := <-pubDone:
		require.NoError(t, err, "publisher")
	case <-ctx.Done():
		t.Fatal("the publisher did not finish")
	}
	ids := rec.all()
	require.GreaterOrEqual(t, len(ids), n, "readings acknowledged by the broker")

	byID := accountLake(t, lake, ids, 3*time.Minute)
	elapsed := time.Since(began)
	t.Logf("fault matrix: %d faults in %s", len(runs), elapsed.Round(time.Second))

	if p := os.Getenv("MQDAPR_FAULT_REPORT"); p != "" {
		if !filepath.IsAbs(p) {
			p = filepath.Join(bins.root, p)
		}
		report := faultReport(seed, n, rate, repeats, longRepeats, kinds, runs, ids, byID, elapsed)
		require.NoError(t, os.WriteFile(p, []byte(report), 0o644))
		t.Logf("report written to %s", p)
		reportWritten = p
	}
}

var clockSeed = uint64(time.Now().UnixNano())

// reportWritten is the report TestFaultMatrix wrote in this run; the tests after it add sections.
var reportWritten string

// faultSeed is MQDAPR_FAULT_SEED, else one from the clock.
// One seed for every test of the run, so that the report's seed replays them all.
func faultSeed(t *testing.T) uint64 {
	v := os.Getenv("MQDAPR_FAULT_SEED")
	if v == "" {
		return clockSeed
	}
	seed, err := strconv.ParseUint(v, 10, 64)
	require.NoError(t, err, "MQDAPR_FAULT_SEED=%q: want an unsigned integer", v)
	return seed
}

// Two app replicas (each with its components and daprd) split the shared telemetry subscription;
// mid-stream, at a moment drawn from the seed, one whole replica is killed with kill -9 for good.
// The broker hands the departed member's unacknowledged readings to the other one: every accepted
// reading is in the lake once. Recovery: from the kill until every reading accepted before it is
// in the lake.
func TestFaultReplicaLostForGood(t *testing.T) {
	needDaprd(t)
	seed := faultSeed(t)
	n := int(envInt(t, "MQDAPR_FAULT_REPLICA_READINGS", 3000))
	rate := float64(envInt(t, "MQDAPR_FAULT_RATE", 100))
	t.Logf("replica lost for good: seed %d (replay: MQDAPR_FAULT_SEED=%d), %d readings at %.0f/s", seed, seed, n, rate)
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	s := newAuthStack(t)
	lake := filepath.Join(s.dir, "lake")
	r1 := s.startConnector("replica-1", lake)
	r2 := s.startConnector("replica-2", lake)
	cm := dialPublisher(t, s)
	warmUp(t, cm, lake)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	gate := make(chan struct{})
	rec := &acked{}
	pubDone := make(chan error, 1)
	go func() { pubDone <- faultPublisher(ctx, t, cm, n, rate, gate, rec) }()
	require.Eventually(t, func() bool { return r1.counters()["written"] > 10 && r2.counters()["written"] > 10 },
		60*time.Second, 50*time.Millisecond, "both replicas take part")

	// The random moment: 20-50 % into the stream (the experiment, not synchronisation).
	time.Sleep(time.Duration((0.2 + 0.3*rng.Float64()) * float64(n) / rate * float64(time.Second)))
	killedAt, before := time.Now(), rec.len()
	for _, p := range []*proc{r2.app, r2.pubsub, r2.state, r2.daprd} {
		p.kill(syscall.SIGKILL)
	}
	close(gate)
	accepted := rec.all()[:before]
	var recovery time.Duration
	require.Eventually(t, func() bool {
		byID, _ := lakeRows(t, lake)
		for _, id := range accepted {
			if byID[id] == 0 {
				return false
			}
		}
		recovery = time.Since(killedAt)
		return true
	}, 2*time.Minute, 100*time.Millisecond, "the readings accepted before replica-2 died reach the lake through replica-1")
	t.Logf("replica-2 killed for good after %d accepted readings; all of them in the lake %s later", before, recovery.Round(time.Millisecond))

	select {
	case err := <-pubDone:
		require.NoError(t, err, "publisher")
	case <-ctx.Done():
		t.Fatal("the publisher did not finish")
	}
	ids := rec.all()
	byID := accountLake(t, lake, ids, 2*time.Minute)
	_, byReplica := lakeRows(t, lake)
	assert.Positive(t, byReplica["replica-2"], "replica-2 wrote rows before it died")
	assert.Greater(t, byReplica["replica-1"], byReplica["replica-2"], "replica-1 took over")

	if reportWritten != "" {
		lost, dups := lakeLoss(ids, byID)
		f, err := os.OpenFile(reportWritten, os.O_APPEND|os.O_WRONLY, 0)
		require.NoError(t, err)
		defer f.Close()
		fmt.Fprintf(f, "\n## Two replicas on a shared subscription, one killed for good\n\n")
		fmt.Fprintf(f, "`TestFaultReplicaLostForGood`, the same seed: two app replicas (each with its components and daprd)\n")
		fmt.Fprintf(f, "split `$share/connector/devices/+/telemetry`; at a moment drawn from the seed (20–50 %% into the\n")
		fmt.Fprintf(f, "stream) the whole of replica-2 is killed with SIGKILL and never restarted. Recovery: from the kill\n")
		fmt.Fprintf(f, "until every reading accepted before it is in the lake (the broker hands the departed member's\n")
		fmt.Fprintf(f, "unacknowledged readings to replica-1; Mosquitto 2.0.11 does not, so this runs on the embedded broker).\n\n")
		fmt.Fprintf(f, "| Readings | Accepted before the kill | Rows by replica-1 / replica-2 | Lost | Duplicate rows | Recovery |\n|---:|---:|---:|---:|---:|---:|\n")
		fmt.Fprintf(f, "| %d | %d | %d / %d | %d | %d | %.1f s |\n", len(ids), before, byReplica["replica-1"], byReplica["replica-2"], lost, dups, recovery.Seconds())
	}
}

// accountLake waits (until timeout) for every accepted reading to be in the lake, then asserts that
// none is missing, that no reading has two rows and that the lake holds nothing else (but the
// warm-up's probes); it returns the rows per id.
func accountLake(t *testing.T, lake string, ids []string, timeout time.Duration) map[string]int {
	t.Helper()
	var byID map[string]int
	deadline := time.Now().Add(timeout)
	for {
		byID, _ = lakeRows(t, lake)
		missing := 0
		for _, id := range ids {
			if byID[id] == 0 {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond) // polling interval
	}
	lost, dups := 0, 0
	var lostIDs, dupIDs []string
	for _, id := range ids {
		if byID[id] == 0 {
			lost++
			lostIDs = append(lostIDs, id)
		}
	}
	probes := 0
	for id, k := range byID {
		if strings.HasPrefix(id, "fwarm/") {
			probes++
		}
		if k > 1 {
			dups += k - 1
			dupIDs = append(dupIDs, id)
		}
	}
	t.Logf("%d readings acknowledged, %d rows, %d lost, %d duplicate rows", len(ids), len(byID), lost, dups)
	assert.Zero(t, lost, "accepted readings missing from the lake (first: %v)", first(lostIDs, 10))
	assert.Zero(t, dups, "duplicate rows (first: %v)", first(dupIDs, 10))
	assert.Len(t, byID, len(ids)+probes, "distinct rows in the lake: one per reading, nothing else")
	return byID
}

func first(s []string, n int) []string {
	sort.Strings(s)
	if len(s) > n {
		return s[:n]
	}
	return s
}

// faultReport is docs/reliability.md: per fault, the readings accepted between the injection and
// the recovery (the ones at risk), how many of those are missing or have more than one row.
func faultReport(seed uint64, n int, rate float64, repeats, longRepeats int, kinds []faultKind, runs []faultRun, ids []string,
	byID map[string]int, elapsed time.Duration) string {
	var b strings.Builder
	load, _ := os.ReadFile("/proc/loadavg")
	fmt.Fprintf(&b, "# Reliability: the fault matrix\n\n")
	fmt.Fprintf(&b, "Generated by `TestFaultMatrix` (tests/e2e/faults_e2e_test.go); do not edit by hand.\n\n")
	fmt.Fprintf(&b, "One stream of %d QoS 1 readings (at least %d, and on until the last fault; 8 devices, offered at %.0f/s)\nthrough the whole chain: a paho.golang ", len(ids), n, rate)
	fmt.Fprintf(&b, "publisher → mqbroker (data directory) → pubsub.mqttv5 → daprd → the connector app (app/) → the lake,\n")
	fmt.Fprintf(&b, "with state.mqttkv in use. Each kill %d times, each fault that lasts %d times, in an order and at moments drawn from the seed (after each\n", repeats, longRepeats)
	fmt.Fprintf(&b, "recovery, a gap uniform in [0.5, 1.5] × ¾ of the stream's length / (faults + 1), at least 1 s); every process is killed with SIGKILL and restarted as a supervisor would\n")
	fmt.Fprintf(&b, "(daprd with a component: it does not re-initialise a component that restarted).\n\n")
	fmt.Fprintf(&b, "- Seed: %d\n", seed)
	fmt.Fprintf(&b, "- Command: `MQDAPR_FAULT_SEED=%d MQDAPR_FAULT_READINGS=%d MQDAPR_FAULT_RATE=%.0f MQDAPR_FAULT_REPEATS=%d MQDAPR_FAULT_LONG_REPEATS=%d MQDAPR_FAULT_REPORT=docs/reliability.md go test -count=1 -run '^TestFault(Matrix|ReplicaLostForGood|SlowConsumer)$' -v ./tests/e2e/` (or `make chaos`)\n", seed, n, rate, repeats, longRepeats)
	fmt.Fprintf(&b, "- Run: %s on %d CPUs, load average at the end %s\n\n", elapsed.Round(time.Second), runtime.NumCPU(), strings.Join(strings.Fields(string(load))[:3], " "))
	fmt.Fprintf(&b, "Readings: accepted (PUBACKed to the publisher) between the injection and the recovery. Lost: of those,\n")
	fmt.Fprintf(&b, "missing from the lake. Duplicate rows: of those, rows beyond one. Recovery: from the injection to the\n")
	fmt.Fprintf(&b, "next row written after the restarted processes were ready (restart time included); for a fault that\n")
	fmt.Fprintf(&b, "lasts (frozen, unreachable), from its end.\n\n")
	fmt.Fprintf(&b, "| Fault | Times | Readings | Lost | Duplicate rows | Max recovery |\n|---|---:|---:|---:|---:|---:|\n")
	type agg struct {
		times, readings, lost, dups int
		max                         time.Duration
	}
	for _, k := range kinds {
		var a agg
		for _, r := range runs {
			if r.kind != k.name {
				continue
			}
			a.times++
			a.max = max(a.max, r.recovery)
			for _, id := range ids[r.fromAcked:r.toAcked] {
				a.readings++
				if byID[id] == 0 {
					a.lost++
				} else {
					a.dups += byID[id] - 1
				}
			}
		}
		fmt.Fprintf(&b, "| %s | %d | %d | %d | %d | %.1f s |\n", k.name, a.times, a.readings, a.lost, a.dups, a.max.Seconds())
	}
	lost, dups := 0, 0
	for _, id := range ids {
		if byID[id] == 0 {
			lost++
		}
	}
	for _, k := range byID {
		dups += max(0, k-1)
	}
	fmt.Fprintf(&b, "| **whole stream** | %d | %d | %d | %d | |\n\n", len(runs), len(ids), lost, dups)
	fmt.Fprintf(&b, "Faults in the order injected (seconds since the start of the test):\n\n")
	for i, r := range runs {
		fmt.Fprintf(&b, "%d. at %.1f s: %s, recovered in %.1f s\n", i+1, r.offset.Seconds(), r.kind, r.recovery.Seconds())
	}
	return b.String()
}

// rssKB is the resident set size of process pid (VmRSS), -1 when it cannot be read.
func rssKB(pid int) int64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return -1
	}
	for _, line := range strings.Split(string(b), "\n") {
		if f := strings.Fields(line); len(f) >= 2 && f[0] == "VmRSS:" {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return -1
}

// A slow consumer: the app is stopped (SIGSTOP) until the backlog reaches the broker's bound, then
// runs half of the time (SIGSTOP 250 ms, SIGCONT 250 ms, over and over: the real process, slowed),
// while pubsub.mqttv5 holds at most receiveMaximum=4 deliveries in flight. The backlog stays in the
// broker, whose queue is bounded (-max-group-queue: beyond it a publish is refused with 0x97 and
// the publisher sends it again); the component's memory stays flat; every accepted reading lands
// once.
func TestFaultSlowConsumer(t *testing.T) {
	const groupQueue, recvMax = 400, 4
	n := int(envInt(t, "MQDAPR_FAULT_SLOW_READINGS", 2000))
	rate := float64(envInt(t, "MQDAPR_FAULT_RATE", 100))
	metricsPort := testutil.FreePort(t)
	s := newAuthStack(t, "-metrics-addr", fmt.Sprintf("127.0.0.1:%d", metricsPort), "-max-group-queue", fmt.Sprint(groupQueue))
	lake := filepath.Join(s.dir, "lake")
	c := s.startConnectorMeta("replica-1", lake, map[string]string{"receiveMaximum": fmt.Sprint(recvMax)})
	cm := dialPublisher(t, s)
	warmUp(t, cm, lake)
	baseRSS := rssKB(c.pubsub.cmd.Process.Pid)
	require.Positive(t, baseRSS)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	gate := make(chan struct{})
	close(gate) // no fault to wait for
	rec := &acked{}
	pubDone := make(chan error, 1)
	go func() { pubDone <- faultPublisher(ctx, t, cm, n, rate, gate, rec) }()

	// The app stopped until the backlog reaches the bound (the broker refuses a publish), then
	// slowed down until the publisher is done; the broker's queue and the component's memory are
	// sampled meanwhile.
	var maxQueued, maxRSS int64
	queuedSeen := false // the gauge is always exported: never seeing it means a wrong name
	metrics := fmt.Sprintf("http://127.0.0.1:%d/metrics", metricsPort)
	const refusedTotal = "mqdapr_broker_refused_total"
	quota := []string{"code", "0x97", "reason", "quota_exceeded"}
	sample := func() {
		q, ok := metric(t, metrics, "mqdapr_broker_queued_messages")
		queuedSeen = queuedSeen || ok
		maxQueued = max(maxQueued, q)
		maxRSS = max(maxRSS, rssKB(c.pubsub.cmd.Process.Pid))
	}
	app := c.app.cmd.Process
	require.NoError(t, app.Signal(syscall.SIGSTOP))
	// The refusal counter of a code appears with its first refusal.
	require.Eventually(t, func() bool { sample(); n, _ := metric(t, metrics, refusedTotal, quota...); return n > 0 }, 60*time.Second, 100*time.Millisecond,
		"the backlog reaches -max-group-queue and the broker refuses a publish with 0x97")
	require.NoError(t, app.Signal(syscall.SIGCONT))
	var pubErr error
slow:
	for {
		require.NoError(t, app.Signal(syscall.SIGSTOP))
		for phase := range 2 { // stopped, then running
			select {
			case pubErr = <-pubDone:
				require.NoError(t, app.Signal(syscall.SIGCONT))
				break slow
			case <-time.After(250 * time.Millisecond): // the duty cycle: the experiment, not synchronisation
			}
			sample()
			if phase == 0 {
				require.NoError(t, app.Signal(syscall.SIGCONT))
			}
		}
	}
	require.NoError(t, pubErr, "publisher")
	refused, _ := metric(t, metrics, refusedTotal, quota...)
	require.True(t, queuedSeen, "mqdapr_broker_queued_messages never in %s", metrics)
	t.Logf("slow consumer: broker queue at most %d (bound %d), %d publishes refused with 0x97; pubsub.mqttv5 RSS %d kB before, at most %d kB",
		maxQueued, groupQueue, refused, baseRSS, maxRSS)
	assert.LessOrEqual(t, maxQueued, int64(groupQueue+2*recvMax+8), "the broker's queue stays within -max-group-queue")
	assert.Less(t, maxRSS, baseRSS+32<<10, "the component's memory stays flat (within 32 MiB of its idle size)")
	ids := rec.all()
	byID := accountLake(t, lake, ids, 3*time.Minute)

	if reportWritten != "" {
		lost, dups := lakeLoss(ids, byID)
		f, err := os.OpenFile(reportWritten, os.O_APPEND|os.O_WRONLY, 0)
		require.NoError(t, err)
		defer f.Close()
		fmt.Fprintf(f, "\n## A slow consumer held by Receive Maximum\n\n")
		fmt.Fprintf(f, "`TestFaultSlowConsumer`: the app is stopped (SIGSTOP) until the backlog reaches the bound, then 250 ms\n")
		fmt.Fprintf(f, "out of every 500 ms, against %.0f readings/s offered; pubsub.mqttv5 has `receiveMaximum: %d`; mqbroker `-max-group-queue %d`. The\n", rate, recvMax, groupQueue)
		fmt.Fprintf(f, "broker's queue (`mqdapr_broker_queued_messages`: the group's queue, the deliveries in flight and the other\n")
		fmt.Fprintf(f, "sessions) and the component's RSS are sampled every 250 ms; a publish beyond the bound is refused\n")
		fmt.Fprintf(f, "with 0x97 and sent again by the publisher.\n\n")
		fmt.Fprintf(f, "| Readings | Max broker queue (bound) | Refused 0x97 | pubsub.mqttv5 RSS idle → max | Lost | Duplicate rows |\n|---:|---:|---:|---:|---:|---:|\n")
		fmt.Fprintf(f, "| %d | %d (%d) | %d | %.1f → %.1f MiB | %d | %d |\n", len(ids), maxQueued, groupQueue, refused,
			float64(baseRSS)/1024, float64(maxRSS)/1024, lost, dups)
	}
}

// lakeLoss counts the accepted readings missing from the lake and the rows beyond one per id.
func lakeLoss(ids []string, byID map[string]int) (lost, dups int) {
	for _, id := range ids {
		if byID[id] == 0 {
			lost++
		}
	}
	for _, k := range byID {
		dups += max(0, k-1)
	}
	return lost, dups
}

// metric reads one sample (labels as name, value pairs) of a /metrics page, and whether it is there.
func metric(t *testing.T, url, name string, labels ...string) (int64, bool) {
	m := testutil.Scrape(t, url)
	return int64(m.Value(name, labels...)), m.Has(name, labels...)
}
