package clients

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

// protocol is an MQTT protocol version as mosquitto_pub/mosquitto_sub name it (-V).
type protocol string

const (
	v5   protocol = "mqttv5"
	v311 protocol = "mqttv311"
)

// brokerUnderTest is a broker process a test owns: on a free loopback port, with durable storage
// in a temporary folder, restartable on the same port and storage.
type brokerUnderTest interface {
	// Addr is host:port of the MQTT listener.
	Addr() string
	// Port is the MQTT listener's port.
	Port() int
	// Restart ends the broker the hardest way under which its storage promises to keep
	// acknowledged messages and sessions, waits until it is gone, and starts it again.
	Restart(t testing.TB)
	// Log is the broker's log so far, for failure messages.
	Log() string
}

// brokerKind is one row of the broker table: how to start it, which protocol versions it serves.
type brokerKind struct {
	name      string
	protocols []protocol
	// pending says, for a protocol the broker does not serve yet, why; its cases are skipped.
	pending map[protocol]string
	start   func(t testing.TB) brokerUnderTest
}

// brokers is the table of brokers each case runs against. mqbroker is the broker under test;
// Mosquitto 2.0.11 is the reference: a case green on Mosquitto proves the test itself, and a
// case red on mqbroker only is a finding about mqbroker.
var brokers = []brokerKind{
	{name: "mqbroker", protocols: []protocol{v5, v311}, start: startMQBroker},
	{name: "mosquitto", protocols: []protocol{v5, v311}, start: startMosquitto},
}

// forEachBroker runs f as a subtest per broker of the table that serves p, restricted by
// MQDAPR_CLIENTS_BROKERS (a comma-separated list of broker names; empty: all).
func forEachBroker(t *testing.T, p protocol, f func(t *testing.T, b brokerUnderTest)) {
	t.Helper()
	var only []string
	if s := os.Getenv("MQDAPR_CLIENTS_BROKERS"); s != "" {
		only = strings.Split(s, ",")
		for _, n := range only {
			if !slices.ContainsFunc(brokers, func(k brokerKind) bool { return k.name == n }) {
				t.Fatalf("MQDAPR_CLIENTS_BROKERS names %q: want a comma-separated list of mqbroker, mosquitto", n)
			}
		}
	}
	for _, k := range brokers {
		if only != nil && !slices.Contains(only, k.name) {
			continue
		}
		t.Run(k.name, func(t *testing.T) {
			if !slices.Contains(k.protocols, p) {
				t.Skipf("%s: %s", p, k.pending[p])
			}
			t.Parallel()
			f(t, k.start(t))
		})
	}
}

// mqbrokerProc is cmd/mqbroker as a child process with a data directory (every acknowledged
// message and session is fsynced there before the acknowledgement).
type mqbrokerProc struct {
	t      testing.TB
	port   int
	wsPort int // 0: no WebSocket listener
	dir    string
	log    string
	cmd    *exec.Cmd
	done   chan struct{}
}

func startMQBroker(t testing.TB) brokerUnderTest { return startMQBrokerProc(t, false) }

// startMQBrokerProc starts mqbroker, with a WebSocket listener (-ws-addr) when ws is set.
func startMQBrokerProc(t testing.TB, ws bool) *mqbrokerProc {
	t.Helper()
	dir := t.TempDir()
	b := &mqbrokerProc{t: t, port: testutil.FreePort(t), dir: dir, log: filepath.Join(dir, "mqbroker.log")}
	if ws {
		b.wsPort = testutil.FreePort(t)
	}
	b.start()
	t.Cleanup(func() {
		b.stop(syscall.SIGKILL)
		if t.Failed() {
			t.Logf("--- mqbroker log (last lines) ---\n%s", tail(b.Log(), 40))
		}
	})
	return b
}

func (b *mqbrokerProc) Addr() string { return fmt.Sprintf("127.0.0.1:%d", b.port) }
func (b *mqbrokerProc) Port() int    { return b.port }

func (b *mqbrokerProc) start() {
	b.t.Helper()
	f, err := os.OpenFile(b.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		b.t.Fatal(err)
	}
	defer f.Close()
	args := []string{"-addr", b.Addr(), "-data-dir", filepath.Join(b.dir, "data"), "-log-level", "debug"}
	if b.wsPort != 0 {
		args = append(args, "-ws-addr", fmt.Sprintf("127.0.0.1:%d", b.wsPort))
	}
	b.cmd = exec.Command(bins.mqbroker, args...)
	b.cmd.Stdout, b.cmd.Stderr = f, f
	if err := b.cmd.Start(); err != nil {
		b.t.Fatalf("start mqbroker: %v", err)
	}
	b.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(b.cmd, b.done)
	testutil.WaitListening(b.t, b.Addr(), 10*time.Second, b.done)
	if b.wsPort != 0 {
		testutil.WaitListening(b.t, fmt.Sprintf("127.0.0.1:%d", b.wsPort), 10*time.Second, b.done)
	}
}

func (b *mqbrokerProc) stop(sig syscall.Signal) {
	if b.cmd != nil {
		testutil.Stop(b.cmd.Process, b.done, sig, 15*time.Second)
	}
}

// Restart kills mqbroker with SIGKILL: its data directory keeps what it acknowledged.
func (b *mqbrokerProc) Restart(t testing.TB) {
	t.Helper()
	b.stop(syscall.SIGKILL)
	b.start()
}

func (b *mqbrokerProc) Log() string {
	s, _ := os.ReadFile(b.log)
	return string(s)
}

// mosquittoBroker is Debian's Mosquitto with persistence (internal/testutil).
type mosquittoBroker struct{ *testutil.Mosquitto }

func startMosquitto(t testing.TB) brokerUnderTest {
	t.Helper()
	m := testutil.StartMosquitto(t, testutil.MosquittoOptions{})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("--- mosquitto log (last lines) ---\n%s", tail(m.Log(), 40))
		}
	})
	return mosquittoBroker{m}
}

func (m mosquittoBroker) Port() int { return m.Mosquitto.Port }

// Restart stops Mosquitto with SIGTERM: Mosquitto writes its persistence file at exit and every
// autosave_interval, so a SIGKILL may lose what it acknowledged since the last save (by design;
// mqbroker's restart is a SIGKILL).
func (m mosquittoBroker) Restart(t testing.TB) {
	t.Helper()
	m.Stop()
	m.Start()
}

// tail is the last n lines of s.
func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
