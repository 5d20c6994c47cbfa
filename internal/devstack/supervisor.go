// Package devstack runs mqdapr's processes on one machine for `make run`: the embedded broker,
// both pluggable components, daprd, the app and the demo publisher, with prefixed logs. It
// restarts a process that died, restarts daprd whenever a component restarts (daprd does not
// re-initialise a component that came back, and delivery would stop silently), notices a
// component that stopped answering its socket, and stops everything cleanly, removing sockets.
package devstack

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Spec describes one supervised process.
type Spec struct {
	Name string
	Path string
	Args []string
	Env  []string
	// Ready blocks until the process serves (or ctx ends); nil means ready at once.
	Ready func(ctx context.Context) error
	// Healthy is polled every HealthInterval once ready; HealthFailures failures in a row count as
	// a hung process, which is killed and restarted.
	Healthy func(ctx context.Context) error
	// RestartsDaprd marks the components: when one restarts, daprd is restarted after it.
	RestartsDaprd bool
	// IsDaprd marks daprd itself.
	IsDaprd bool
	// Cleanup runs after the process ended, before a restart (e.g. remove its socket).
	Cleanup func()
}

// Supervisor owns the processes of a Spec list.
type Supervisor struct {
	Out            io.Writer // prefixed output of every process
	HealthInterval time.Duration
	HealthFailures int

	mu       sync.Mutex // guards procs, stopping and the writes to Out
	procs    map[string]*running
	stopping bool // set by stopAll: no process is started after it
	wg       sync.WaitGroup
}

type running struct {
	spec     Spec
	cmd      *exec.Cmd
	done     chan struct{}
	stopping bool
	restarts int
}

// Run starts specs in order (each after the previous is ready) and supervises them until ctx
// ends; then it stops them in reverse order with SIGTERM (SIGKILL after 15 s).
func (s *Supervisor) Run(ctx context.Context, specs []Spec) error {
	if s.HealthInterval == 0 {
		s.HealthInterval = 3 * time.Second
	}
	if s.HealthFailures == 0 {
		s.HealthFailures = 3
	}
	s.procs = map[string]*running{}
	for _, sp := range specs {
		if err := s.start(ctx, sp); err != nil {
			s.stopAll(specs)
			s.wg.Wait()
			return err
		}
	}
	s.Logf("up: %s", s.pids(specs))
	<-ctx.Done()
	s.stopAll(specs)
	s.wg.Wait()
	return nil
}

// pids lists name=pid of the running processes, in start order.
func (s *Supervisor) pids(specs []Spec) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, sp := range specs {
		if r, ok := s.procs[sp.Name]; ok {
			fmt.Fprintf(&b, " %s=%d", sp.Name, r.cmd.Process.Pid)
		}
	}
	return strings.TrimSpace(b.String())
}

// Logf writes a supervisor line.
func (s *Supervisor) Logf(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	fmt.Fprintf(s.Out, "[run] "+format+"\n", args...)
}

func (s *Supervisor) start(ctx context.Context, sp Spec) error {
	cmd := exec.Command(sp.Path, sp.Args...)
	cmd.Env = append(os.Environ(), sp.Env...)
	pr, pw := io.Pipe()
	cmd.Stdout, cmd.Stderr = pw, pw
	// Started and registered under the lock, so that stopAll either sees the process or it is
	// never started (a restart racing the stop would otherwise run unsupervised).
	s.mu.Lock()
	if s.stopping {
		s.mu.Unlock()
		return fmt.Errorf("start %s: %w", sp.Name, context.Canceled)
	}
	// Own process group and killed with the supervisor: procattr_*.go, spawn.go.
	if err := startCmd(cmd); err != nil {
		s.mu.Unlock()
		return fmt.Errorf("start %s: %w", sp.Name, err)
	}
	r := &running{spec: sp, cmd: cmd, done: make(chan struct{})}
	if old, ok := s.procs[sp.Name]; ok {
		r.restarts = old.restarts + 1
	}
	s.procs[sp.Name] = r
	s.mu.Unlock()
	s.wg.Add(2)
	go func() { defer s.wg.Done(); s.copy(sp.Name, pr) }()
	go func() {
		defer s.wg.Done()
		err := cmd.Wait()
		pw.Close()
		close(r.done)
		if sp.Cleanup != nil {
			sp.Cleanup()
		}
		s.mu.Lock()
		stopping := r.stopping
		s.mu.Unlock()
		if stopping || ctx.Err() != nil {
			return
		}
		s.Logf("%s exited (%v): restarting", sp.Name, err)
		s.restart(ctx, sp)
	}()
	if sp.Ready != nil {
		rctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
		defer cancel()
		exited := make(chan struct{})
		go func() { // a process that exits ends the wait at once
			select {
			case <-r.done:
				close(exited)
				cancel()
			case <-rctx.Done():
			}
		}()
		if err := sp.Ready(rctx); err != nil {
			select {
			case <-exited:
				return fmt.Errorf("%s exited during start-up", sp.Name)
			default:
			}
			return fmt.Errorf("%s not ready: %w", sp.Name, err)
		}
	}
	if sp.Healthy != nil {
		s.wg.Add(1)
		go func() { defer s.wg.Done(); s.watch(ctx, r) }()
	}
	return nil
}

// restart starts sp again (with a short backoff) and, for a component, restarts daprd after it.
func (s *Supervisor) restart(ctx context.Context, sp Spec) {
	for attempt := 0; ctx.Err() == nil && !s.isStopping(); attempt++ {
		backoff := min(time.Duration(1<<min(attempt, 5))*250*time.Millisecond, 5*time.Second)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		if err := s.start(ctx, sp); err != nil {
			s.Logf("%s: %v; retrying", sp.Name, err)
			continue
		}
		break
	}
	if !sp.RestartsDaprd || ctx.Err() != nil || s.isStopping() {
		return
	}
	s.mu.Lock()
	var daprd *running
	for _, r := range s.procs {
		if r.spec.IsDaprd {
			daprd = r
		}
	}
	s.mu.Unlock()
	if daprd != nil {
		s.Logf("restarting daprd so that it initialises the restarted %s", sp.Name)
		// Killing it lets its own supervision goroutine start it again.
		_ = daprd.cmd.Process.Signal(syscall.SIGTERM)
	}
}

func (s *Supervisor) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

// watch polls a process's health and kills it after HealthFailures failures in a row.
func (s *Supervisor) watch(ctx context.Context, r *running) {
	t := time.NewTicker(s.HealthInterval)
	defer t.Stop()
	failures := 0
	for {
		select {
		case <-ctx.Done():
			return
		case <-r.done:
			return
		case <-t.C:
		}
		hctx, cancel := context.WithTimeout(ctx, s.HealthInterval)
		err := r.spec.Healthy(hctx)
		cancel()
		if err == nil {
			failures = 0
			continue
		}
		failures++
		if failures >= s.HealthFailures {
			s.Logf("%s stopped answering (%v): killing it", r.spec.Name, err)
			_ = r.cmd.Process.Kill()
			return
		}
	}
}

func (s *Supervisor) stopAll(specs []Spec) {
	s.mu.Lock()
	s.stopping = true
	s.mu.Unlock()
	for i := len(specs) - 1; i >= 0; i-- {
		s.mu.Lock()
		r, ok := s.procs[specs[i].Name]
		if ok {
			r.stopping = true
		}
		s.mu.Unlock()
		if !ok {
			continue
		}
		_ = r.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-r.done:
		case <-time.After(15 * time.Second):
			_ = r.cmd.Process.Kill()
			<-r.done
		}
	}
}

func (s *Supervisor) copy(name string, r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64*1024), 1<<20)
	for sc.Scan() {
		s.mu.Lock()
		fmt.Fprintf(s.Out, "[%s] %s\n", name, sc.Text())
		s.mu.Unlock()
	}
	_, _ = io.Copy(io.Discard, r)
}
