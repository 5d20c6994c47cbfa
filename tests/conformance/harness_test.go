// Package conformance runs Dapr's own conformance suites (components-contrib v1.16.1,
// tests/conformance/{pubsub,state}) out of process: against the component binaries
// (cmd/pubsub-mqtt5, cmd/state-kv, built by TestMain) over their real unix sockets, through the
// gRPC clients daprd v1.16.0 itself uses for pluggable components
// (github.com/dapr/dapr/pkg/components/pubsub.NewGRPCPubSub, .../state.NewGRPCStateStore).
//
// It is a module of its own (tests/conformance/go.mod) because those dapr packages pull in
// k8s.io/client-go and much else the root module does not carry. The in-process runs of the same
// suites stay in components/pubsub-mqtt5 and components/state-kv (conformance_test.go).
package conformance

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/dapr/kit/logger"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

// childEnv, when set, makes the test binary a child run of one suite (see state_test.go); the
// parent process owns the broker and the component processes.
const childEnv = "MQDAPR_CONFORMANCE_CHILD"

// bins is the folder holding the project's binaries, built once by TestMain.
var bins string

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(m.Run())
	}
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "mqdapr-conformance-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bins = dir
	root, _ := filepath.Abs("../..")
	// Built with the race detector: the component processes are the code under test, and a data
	// race they report fails the test (checkNoRace).
	build := exec.Command("go", "build", "-race", "-o", dir+"/", "./cmd/mqbroker", "./cmd/pubsub-mqtt5", "./cmd/state-kv")
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		return 1
	}
	return m.Run()
}

// testLog is the logger handed to daprd's gRPC clients.
var testLog = func() logger.Logger {
	l := logger.NewLogger("conformance")
	l.SetOutputLevel(logger.WarnLevel)
	if os.Getenv("MQDAPR_TEST_DEBUG") != "" {
		l.SetOutputLevel(logger.DebugLevel)
	}
	return l
}()

// proc is a child process with its output in a log file.
type proc struct {
	name, log string
	cmd       *exec.Cmd
	done      chan struct{}
}

func start(t *testing.T, name string, env []string, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, log: filepath.Join(t.TempDir(), name+".log"), done: make(chan struct{})}
	f, err := os.Create(p.log)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		// SIGTERM: the components' orderly shutdown runs too (and a race in it is reported).
		testutil.Stop(p.cmd.Process, p.done, syscall.SIGTERM, 20*time.Second)
		p.checkNoRace(t)
		if t.Failed() {
			t.Logf("--- last lines of %s ---\n%s", name, p.tail(60))
		}
	})
	return p
}

// checkNoRace fails the test when the race detector reported a data race in the process's
// output. There is no exception any more: the pub/sub component is served by mqdapr's own gRPC
// server (internal/pluggable/pubsubserver), not by components-go-sdk v0.3.0, whose ack race
// (testdata/sdk-ack-race.txt) this harness used to let through.
func (p *proc) checkNoRace(t *testing.T) {
	b, _ := os.ReadFile(p.log)
	for _, report := range raceReports(string(b)) {
		t.Errorf("%s reported a data race:\n%s", p.name, report)
	}
}

// raceReports splits the race detector's output into its reports.
func raceReports(log string) []string {
	var out []string
	for _, block := range strings.Split(log, "==================") {
		if strings.Contains(block, "WARNING: DATA RACE") {
			out = append(out, strings.TrimSpace(block))
		}
	}
	return out
}

func (p *proc) tail(n int) string {
	b, _ := os.ReadFile(p.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// startEmbeddedBroker runs cmd/mqbroker (MQTT v5 and the key-value store) on a free loopback port
// and returns its URL.
func startEmbeddedBroker(t *testing.T) string {
	t.Helper()
	addr := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	b := start(t, "mqbroker", nil, filepath.Join(bins, "mqbroker"),
		"-addr", addr, "-data-dir", filepath.Join(t.TempDir(), "data"), "-log-level", "warn")
	testutil.WaitListening(t, addr, 20*time.Second, b.done)
	return "mqtt://" + addr
}

// startComponent runs a component binary serving <folder>/<socket>.sock and waits for the socket.
// The folder is short: unix socket paths are limited to 108 bytes.
func startComponent(t *testing.T, bin, socket string) (path string, p *proc) {
	t.Helper()
	folder, err := os.MkdirTemp("", "mqc-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(folder) })
	env := []string{
		"DAPR_COMPONENT_SOCKETS_FOLDER=" + folder,
		// The record of the pub/sub component's session filters (stateDir's default) stays in the test's folder.
		"XDG_STATE_HOME=" + filepath.Join(t.TempDir(), "state"),
	}
	if os.Getenv("MQDAPR_TEST_DEBUG") != "" {
		env = append(env, "MQDAPR_LOG_LEVEL=debug")
	}
	p = start(t, bin, env, filepath.Join(bins, bin))
	path = filepath.Join(folder, socket+".sock")
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(path); err == nil {
			return path, p
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited before creating %s:\n%s", bin, path, p.tail(40))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no socket %s after 30 s", bin, path)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}
