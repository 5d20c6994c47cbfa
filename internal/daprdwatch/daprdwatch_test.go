package daprdwatch

import (
	"bytes"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	dapr "github.com/dapr-sandbox/components-go-sdk"
	sdkstate "github.com/dapr-sandbox/components-go-sdk/state/v1"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	statekv "github.com/mqdapr/mqdapr/components/state-kv"
	"github.com/mqdapr/mqdapr/internal/pluggable"
	"github.com/mqdapr/mqdapr/internal/testutil"
)

// The test binary is also the real state store component (helperComponent) and a stand-in for
// daprd that runs until SIGTERM (helperDaprd: the file it creates once it handles SIGTERM): Run's job is the process handling around daprd,
// which the container test (tests/containers) exercises with the real daprd.
const (
	helperComponent = "DAPRDWATCH_TEST_COMPONENT"
	helperDaprd     = "DAPRDWATCH_TEST_DAPRD"
)

func TestMain(m *testing.M) {
	switch {
	case os.Getenv(helperComponent) != "":
		log := pluggable.NewLogger("mqttkv-state")
		dapr.Register(statekv.ComponentName, dapr.WithStateStore(func() sdkstate.Store { return statekv.NewPluggable(log) }))
		_ = dapr.Run()
		os.Exit(0)
	case os.Getenv(helperDaprd) != "":
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGTERM)
		if err := os.WriteFile(os.Getenv(helperDaprd), nil, 0o600); err != nil { // ready for the signal
			os.Exit(1)
		}
		<-sigs
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// component is a state-kv process serving folder/mqttkv.sock, killed at the end of the test.
type component struct {
	cmd    *exec.Cmd
	exited chan struct{}
}

func startComponent(t *testing.T, folder string) *component {
	t.Helper()
	c := &component{cmd: exec.Command(os.Args[0], "-test.run=^$"), exited: make(chan struct{})}
	c.cmd.Env = append(os.Environ(), helperComponent+"=1", "DAPR_COMPONENT_SOCKETS_FOLDER="+folder, "MQDAPR_LOG_LEVEL=fatal")
	require.NoError(t, c.cmd.Start())
	go func() { _ = c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(c.kill)
	return c
}

// kill ends the component with SIGKILL: its socket file stays behind, as after `docker kill`.
func (c *component) kill() { testutil.Stop(c.cmd.Process, c.exited, syscall.SIGKILL, 0) }

// syncBuffer is a log destination that the test reads while Run writes to it.
type syncBuffer struct {
	mu sync.Mutex // guards b
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func waitLog(t *testing.T, log *syncBuffer, want string) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Contains(log.String(), want) }, 30*time.Second, 20*time.Millisecond,
		"log line %q", want)
}

func testOptions(folder string) Options {
	o := NewDefaultOptions()
	o.Components = []Component{{Socket: filepath.Join(folder, "mqttkv.sock"), Kind: pluggable.StateStore}}
	o.Interval = 50 * time.Millisecond
	o.StopTimeout = 10 * time.Second
	o.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	return o
}

func TestParseComponent(t *testing.T) {
	for in, want := range map[string]Component{
		"pubsub:/s/mqttv5.sock": {Socket: "/s/mqttv5.sock", Kind: pluggable.PubSub},
		"state:/s/mqttkv.sock":  {Socket: "/s/mqttkv.sock", Kind: pluggable.StateStore},
	} {
		got, err := ParseComponent(in)
		require.NoError(t, err, in)
		require.Equal(t, want, got)
	}
	for in, msg := range map[string]string{
		"/s/mqttv5.sock":  "want pubsub:<socket path> or state:<socket path>",
		"pubsub:":         "want pubsub:<socket path> or state:<socket path>",
		"binding:/s/x.so": `kind "binding" unknown, want pubsub or state`,
	} {
		_, err := ParseComponent(in)
		require.ErrorContains(t, err, msg, in)
	}
}

// A component killed and started again on the same socket path (what a container restart does)
// is seen as replaced, even when the new process is up before a Ping could fail.
func TestWatchSeesReplacedSocket(t *testing.T) {
	folder := t.TempDir()
	first := startComponent(t, folder)
	o := testOptions(folder)
	o.Failures = 1 << 20 // only the replacement can end the watch
	ids, err := WaitReady(t.Context(), o)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- Watch(t.Context(), o, ids) }()
	first.kill()
	startComponent(t, folder)
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrComponentRestarted)
		require.ErrorContains(t, err, "was replaced")
	case <-time.After(30 * time.Second):
		t.Fatal("the replaced socket was not noticed")
	}
}

// A component that dies and does not come back ends the watch after Failures failed Pings; a
// healthy one does not.
func TestWatchSeesDeadComponent(t *testing.T) {
	folder := t.TempDir()
	c := startComponent(t, folder)
	o := testOptions(folder)
	ids, err := WaitReady(t.Context(), o)
	require.NoError(t, err)
	done := make(chan error, 1)
	go func() { done <- Watch(t.Context(), o, ids) }()
	select {
	case err := <-done:
		t.Fatalf("watch ended with the component healthy: %v", err)
	case <-time.After(20 * o.Interval): // twenty rounds of checks, all passing
	}
	c.kill()
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrComponentRestarted)
		require.ErrorContains(t, err, "failed 3 Pings in a row")
	case <-time.After(30 * time.Second):
		t.Fatal("the dead component was not noticed")
	}
}

// Run starts "daprd" only once the component answers, stops it when the component restarts and
// exits 3; a forwarded SIGTERM ends daprd and Run returns daprd's own exit code.
func TestRun(t *testing.T) {
	t.Setenv(helperDaprd, filepath.Join(t.TempDir(), "unused"))
	argv := []string{os.Args[0], "-test.run=^$"}

	t.Run("component restarts", func(t *testing.T) {
		folder := t.TempDir()
		o, log := testOptions(folder), &syncBuffer{}
		o.Log = slog.New(slog.NewTextHandler(log, nil))
		code := make(chan int, 1)
		go func() { code <- Run(o, argv, make(chan os.Signal)) }()
		waitLog(t, log, "waiting for the components") // no socket yet: daprd must wait
		require.NotContains(t, log.String(), "daprd started")
		c := startComponent(t, folder)
		waitLog(t, log, "daprd started")
		c.kill()
		startComponent(t, folder)
		select {
		case got := <-code:
			require.Equal(t, 3, got)
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not end after the component restarted")
		}
	})

	t.Run("signal forwarded", func(t *testing.T) {
		folder := t.TempDir()
		ready := filepath.Join(folder, "daprd.ready")
		t.Setenv(helperDaprd, ready)
		startComponent(t, folder)
		o, log := testOptions(folder), &syncBuffer{}
		o.Log = slog.New(slog.NewTextHandler(log, nil))
		sigs := make(chan os.Signal, 1)
		code := make(chan int, 1)
		go func() { code <- Run(o, argv, sigs) }()
		require.Eventually(t, func() bool { _, err := os.Stat(ready); return err == nil }, 30*time.Second, 20*time.Millisecond)
		sigs <- syscall.SIGTERM
		select {
		case got := <-code:
			require.Equal(t, 0, got) // the stand-in exits 0 on SIGTERM
		case <-time.After(30 * time.Second):
			t.Fatal("Run did not end after SIGTERM")
		}
	})
}
