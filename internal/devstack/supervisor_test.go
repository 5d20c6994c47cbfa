package devstack

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) count(sub string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Count(s.b.String(), sub)
}

func sleeper(name string, component, daprd bool) Spec {
	return Spec{Name: name, Path: "/bin/sh", Args: []string{"-c", "echo started; exec sleep 600"}, RestartsDaprd: component, IsDaprd: daprd}
}

// A component that dies is restarted, and daprd is restarted after it.
func TestRestartedComponentRestartsDaprd(t *testing.T) {
	out := &syncBuf{}
	s := &Supervisor{Out: out}
	ctx, cancel := context.WithCancel(t.Context())
	specs := []Spec{sleeper("component", true, false), sleeper("daprd", false, true)}
	done := make(chan error)
	go func() { done <- s.Run(ctx, specs) }()
	require.Eventually(t, func() bool { return out.count("[daprd] started") == 1 && out.count("[component] started") == 1 }, 10*time.Second, 10*time.Millisecond)

	s.mu.Lock()
	comp := s.procs["component"]
	s.mu.Unlock()
	require.NoError(t, comp.cmd.Process.Signal(syscall.SIGKILL))
	require.Eventually(t, func() bool { return out.count("[component] started") == 2 && out.count("[daprd] started") == 2 }, 10*time.Second, 10*time.Millisecond)
	assert.Equal(t, 1, out.count("restarting daprd"))

	cancel()
	require.NoError(t, <-done)
	assert.Equal(t, 2, out.count("[daprd] started"), "nothing restarted during shutdown")
}

// A process that stops answering its health check is killed and restarted.
func TestHungProcessIsRestarted(t *testing.T) {
	out := &syncBuf{}
	s := &Supervisor{Out: out, HealthInterval: 20 * time.Millisecond, HealthFailures: 2}
	var healthy atomic.Bool
	healthy.Store(true)
	sp := sleeper("component", false, false)
	sp.Healthy = func(context.Context) error {
		if healthy.Load() {
			return nil
		}
		return errors.New("no answer")
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error)
	go func() { done <- s.Run(ctx, []Spec{sp}) }()
	require.Eventually(t, func() bool { return out.count("[component] started") == 1 }, 10*time.Second, 10*time.Millisecond)
	healthy.Store(false)
	require.Eventually(t, func() bool { return out.count("stopped answering") >= 1 }, 10*time.Second, 10*time.Millisecond)
	healthy.Store(true)
	require.Eventually(t, func() bool { return out.count("[component] started") == 2 }, 10*time.Second, 10*time.Millisecond)
	cancel()
	require.NoError(t, <-done)
}
