package bench

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/mqdapr/mqdapr/internal/devstack"
)

// proc is one process the harness started, with its output in a log file. Processes are started
// through devstack.StartCmd: in their own process group (Ctrl-C reaches only the harness, which
// stops them in order) and killed by the kernel if the harness dies without stopping them.
type proc struct {
	name string
	role string // "daprd", "component", "broker", "app": the column its CPU is reported in
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

// procs is the set of processes of one stack, stopped together in reverse start order.
type procs struct {
	mu   sync.Mutex // guards list
	list []*proc
}

// start runs bin with args and env in dir's log file log/<name>.log.
func (ps *procs) start(dir, name, role string, env []string, bin string, args ...string) (*proc, error) {
	p := &proc{name: name, role: role, log: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("log of %s: %w", name, err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := devstack.StartCmd(p.cmd); err != nil {
		f.Close()
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	go func() { _ = p.cmd.Wait(); f.Close(); close(p.done) }()
	ps.mu.Lock()
	ps.list = append(ps.list, p)
	ps.mu.Unlock()
	return p, nil
}

// stopAll stops every process, the last started first: SIGTERM, SIGKILL after 10 s.
func (ps *procs) stopAll() {
	ps.mu.Lock()
	list := ps.list
	ps.list = nil
	ps.mu.Unlock()
	for i := len(list) - 1; i >= 0; i-- {
		p := list[i]
		select {
		case <-p.done:
			continue
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			_ = p.cmd.Process.Kill()
			<-p.done
		}
	}
}

// ready waits for check (a devstack Wait* probe) with a deadline, failing early when p exits.
func (p *proc) ready(ctx context.Context, timeout time.Duration, check func(context.Context) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	go func() {
		select {
		case <-p.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := check(ctx); err != nil {
		select {
		case <-p.done:
			return fmt.Errorf("%s exited during start-up (see %s)", p.name, p.log)
		default:
		}
		return fmt.Errorf("%s not ready within %s (see %s): %w", p.name, timeout, p.log, err)
	}
	return nil
}

// cpuTicks is a process's user + system CPU time so far, in clock ticks (/proc/<pid>/stat fields
// 14 and 15; Linux reports them in USER_HZ, 100 per second on every architecture Go supports).
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// The command name (field 2) is in parentheses and may contain spaces: split after it.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("/proc/%d/stat: no command field", pid)
	}
	f := strings.Fields(s[i+1:]) // f[0] is field 3 (state)
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/%d/stat: %d fields", pid, len(f)+2)
	}
	u, err1 := strconv.ParseInt(f[11], 10, 64)
	st, err2 := strconv.ParseInt(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/%d/stat: utime %q stime %q", pid, f[11], f[12])
	}
	return u + st, nil
}

// ticksPerSecond is USER_HZ (see cpuTicks).
const ticksPerSecond = 100

// memKB reads VmRSS and VmHWM (peak RSS) from /proc/<pid>/status, in KiB.
func memKB(pid int) (rss, hwm int64) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, _ := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			hwm = n
		}
	}
	return rss, hwm
}

// freePorts returns n loopback TCP ports that were free a moment ago (all held open together, so
// they differ).
func freePorts(n int) ([]int, error) {
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			l.Close()
		}
	}()
	out := make([]int, n)
	for i := range out {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, fmt.Errorf("free port: %w", err)
		}
		ls = append(ls, l)
		out[i] = l.Addr().(*net.TCPAddr).Port
	}
	return out, nil
}

// waitPath polls until path exists.
func waitPath(path string) func(context.Context) error {
	return func(ctx context.Context) error {
		for {
			if _, err := os.Stat(path); err == nil {
				return nil
			}
			select {
			case <-ctx.Done():
				return fmt.Errorf("%s did not appear: %w", path, ctx.Err())
			case <-time.After(50 * time.Millisecond): // polling interval
			}
		}
	}
}
