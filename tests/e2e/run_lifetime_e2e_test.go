package e2e

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/internal/devstack"
	"github.com/mqdapr/mqdapr/internal/testutil"
)

// runProc is one mqdapr-run process with its output lines (stdout through a pipe the test can
// close) and its stderr.
type runProc struct {
	t      *testing.T
	cmd    *exec.Cmd
	dir    string
	addr   string
	out    *os.File // read end of the stdout pipe
	done   chan struct{}
	mu     sync.Mutex // guards lines and stderr
	lines  []string
	stderr bytes.Buffer
	kids   map[string]int // children seen while the stack was up (cleanup kills them)
}

func (r *runProc) Write(p []byte) (int, error) { // stderr
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stderr.Write(p)
}

func startRun(t *testing.T, dir, addr string) *runProc {
	t.Helper()
	r := &runProc{t: t, dir: dir, addr: addr, done: make(chan struct{})}
	r.cmd = exec.Command(filepath.Join(bins.dir, "mqdapr-run"), "-bin", bins.dir, "-dir", dir, "-mqtt", addr, "-rate", "20")
	r.cmd.Dir = bins.root
	r.cmd.Env = append(os.Environ(), "DAPRD="+bins.daprd)
	pr, pw, err := os.Pipe()
	require.NoError(t, err)
	r.out = pr
	r.cmd.Stdout, r.cmd.Stderr = pw, r
	require.NoError(t, r.cmd.Start())
	pw.Close()
	read := make(chan struct{})
	go func() {
		defer close(read)
		sc := bufio.NewScanner(pr)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			r.mu.Lock()
			r.lines = append(r.lines, sc.Text())
			r.mu.Unlock()
		}
	}()
	go func() { _ = r.cmd.Wait(); <-read; close(r.done) }()
	t.Cleanup(func() {
		kids := testutil.ChildPids(r.cmd.Process.Pid)
		for name, pid := range r.kids {
			kids[name] = pid
		}
		_ = r.cmd.Process.Kill()
		pr.Close()
		<-r.done
		for _, pid := range kids { // a failing run must not leave its stack to the next test
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
		os.RemoveAll(devstack.SocketDir(dir)) // what a supervisor ended by SIGKILL leaves
		if t.Failed() {
			r.mu.Lock()
			n := len(r.lines)
			t.Logf("mqdapr-run %s: last output:\n%s\nstderr:\n%s", dir, strings.Join(r.lines[max(0, n-40):], "\n"), r.stderr.String())
			r.mu.Unlock()
		}
	})
	return r
}

func (r *runProc) has(s string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, l := range r.lines {
		if strings.Contains(l, s) {
			return true
		}
	}
	return strings.Contains(r.stderr.String(), s)
}

var writtenRE = regexp.MustCompile(`progress: .*written=(\d+)`)

// waitUp waits until rows reach the lake (every process is up) and returns the supervisor's
// children by command name.
func (r *runProc) waitUp() map[string]int {
	r.t.Helper()
	require.Eventually(r.t, func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		for i := len(r.lines) - 1; i >= 0; i-- {
			if m := writtenRE.FindStringSubmatch(r.lines[i]); m != nil {
				n, _ := strconv.Atoi(m[1])
				return n > 0
			}
		}
		return false
	}, 120*time.Second, 100*time.Millisecond, "rows reach the lake")
	r.kids = testutil.ChildPids(r.cmd.Process.Pid)
	require.Len(r.t, r.kids, 7, "broker, dead-letter sink, two components, app, daprd, devices: %v", r.kids)
	return r.kids
}

// waitExit waits for the supervisor to end and returns its exit code (-1: killed by a signal).
func (r *runProc) waitExit(timeout time.Duration) int {
	r.t.Helper()
	select {
	case <-r.done:
	case <-time.After(timeout):
		r.t.Fatalf("mqdapr-run did not end within %s", timeout)
	}
	return r.cmd.ProcessState.ExitCode()
}

// assertFree checks that nothing is left: the broker's port can be listened on and the socket
// folder holds no socket.
func (r *runProc) assertFree() {
	r.t.Helper()
	l, err := net.Listen("tcp", r.addr)
	if assert.NoError(r.t, err, "the broker's port is free") {
		l.Close()
	}
	socks, _ := filepath.Glob(filepath.Join(devstack.SocketDir(r.dir), "*.sock"))
	for _, s := range socks {
		c, err := net.Dial("unix", s)
		if err == nil {
			c.Close()
			r.t.Errorf("socket %s is still served", s)
		}
	}
}

func loopback(t *testing.T) string { return fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t)) }

// Closing the terminal (SIGHUP) stops the whole stack in order and leaves nothing behind.
func TestMakeRunStopsOnSIGHUP(t *testing.T) {
	needDaprd(t)
	dir, addr := t.TempDir(), loopback(t)
	r := startRun(t, dir, addr)
	kids := r.waitUp()
	require.NoError(t, r.cmd.Process.Signal(syscall.SIGHUP))
	assert.Equal(t, 0, r.waitExit(60*time.Second))
	testutil.WaitGone(t, kids, 30*time.Second)
	assert.True(t, r.has("stopped; data kept"))
	r.assertFree()
	_, err := os.Stat(devstack.SocketDir(dir))
	assert.True(t, os.IsNotExist(err), "socket folder removed")
}

// While a stack runs, a second start on the same folder, or on another folder with the same
// broker port, says what is in the way and what to do, and starts nothing.
func TestMakeRunRefusesRunningStack(t *testing.T) {
	needDaprd(t)
	dir, addr := t.TempDir(), loopback(t)
	r := startRun(t, dir, addr)
	kids := r.waitUp()

	second := startRun(t, dir, loopback(t))
	assert.Equal(t, 1, second.waitExit(30*time.Second))
	assert.True(t, second.has(fmt.Sprintf("pid %d holds %s", r.cmd.Process.Pid, filepath.Join(dir, devstack.PidFileName))), "names the running supervisor")
	assert.True(t, second.has(fmt.Sprintf("kill %d", r.cmd.Process.Pid)), "says how to stop it")
	assert.Empty(t, testutil.ChildPids(second.cmd.Process.Pid))

	third := startRun(t, t.TempDir(), addr)
	assert.Equal(t, 1, third.waitExit(30*time.Second))
	broker := 0
	for name, pid := range kids {
		if strings.HasPrefix(name, "mqbroker/") {
			broker = pid
		}
	}
	assert.True(t, third.has(fmt.Sprintf("%s is taken by pid %d", addr, broker)), "names the broker holding the port")
	assert.True(t, third.has("-mqtt"), "says how to choose another port")
}

// A supervisor killed with SIGKILL takes its processes with it; the next start on the folder
// says the last run was killed, removes the sockets it left (nothing listens on them) and runs.
func TestMakeRunKilled(t *testing.T) {
	needDaprd(t)
	dir, addr := t.TempDir(), loopback(t)
	r := startRun(t, dir, addr)
	kids := r.waitUp()
	require.NoError(t, r.cmd.Process.Kill())
	r.waitExit(30 * time.Second)
	testutil.WaitGone(t, kids, 30*time.Second)
	r.assertFree()

	again := startRun(t, dir, addr)
	again.waitUp()
	assert.True(t, again.has(fmt.Sprintf("an earlier mqdapr-run (pid %d)", r.cmd.Process.Pid)), "reports the killed run")
	assert.True(t, again.has("removed stale socket "+filepath.Join(devstack.SocketDir(dir), "mqttv5.sock")), "removes the stale socket")
	require.NoError(t, again.cmd.Process.Signal(syscall.SIGINT))
	assert.Equal(t, 0, again.waitExit(60*time.Second))
	testutil.WaitGone(t, again.kids, 30*time.Second)
	again.assertFree()
}

// `make run | tee log`, then the reader goes: the broken output stops the stack in order instead
// of killing the supervisor (SIGPIPE) and orphaning its processes.
func TestMakeRunStopsOnBrokenOutput(t *testing.T) {
	needDaprd(t)
	dir, addr := t.TempDir(), loopback(t)
	r := startRun(t, dir, addr)
	kids := r.waitUp()
	require.NoError(t, r.out.Close())
	code := r.waitExit(60 * time.Second)
	testutil.WaitGone(t, kids, 30*time.Second)
	assert.Equal(t, 0, code, "an orderly stop, not death by SIGPIPE (state %v)", r.cmd.ProcessState)
	r.assertFree()
	_, err := os.Stat(devstack.SocketDir(dir))
	assert.True(t, os.IsNotExist(err), "socket folder removed")
}

// A start that finds the broker's port taken says by whom and what to do, and starts nothing.
func TestMakeRunRefusesTakenPort(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	r := startRun(t, t.TempDir(), l.Addr().String())
	assert.Equal(t, 1, r.waitExit(60*time.Second))
	assert.True(t, r.has(fmt.Sprintf("%s is taken by pid %d", l.Addr(), os.Getpid())), "names the holder")
	assert.True(t, r.has(fmt.Sprintf("kill %d", os.Getpid())), "says how to stop it")
	assert.Empty(t, testutil.ChildPids(r.cmd.Process.Pid))
}

// A start that finds a component socket of its folder served by a live process says by whom and
// what to do (daprd would otherwise talk to it, or hang on a dead one).
func TestMakeRunRefusesServedSocket(t *testing.T) {
	dir := t.TempDir()
	sockets := devstack.SocketDir(dir)
	require.NoError(t, os.MkdirAll(sockets, 0o700))
	t.Cleanup(func() { os.RemoveAll(sockets) })
	path := filepath.Join(sockets, "mqttkv.sock")
	l, err := net.Listen("unix", path)
	require.NoError(t, err)
	defer l.Close()
	r := startRun(t, dir, loopback(t))
	assert.Equal(t, 1, r.waitExit(60*time.Second))
	assert.True(t, r.has(fmt.Sprintf("%s is served by pid %d", path, os.Getpid())), "names the process serving it")
	assert.True(t, r.has(fmt.Sprintf("kill %d", os.Getpid())), "says how to stop it")
}
