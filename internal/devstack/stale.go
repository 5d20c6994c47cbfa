package devstack

import (
	"errors"
	"fmt"
	"hash/fnv"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// ErrStackRunning is returned by Lock when another supervisor holds the run folder.
var ErrStackRunning = errors.New("devstack: another mqdapr-run is running on this folder")

// ErrAddrTaken is returned by CheckAddrFree when something already listens on the address.
var ErrAddrTaken = errors.New("devstack: address taken")

// ErrSocketInUse is returned by CleanSockets when a live process serves a socket in the folder.
var ErrSocketInUse = errors.New("devstack: socket served by a live process")

// PidFileName is the supervisor's pid file in the run folder, locked (flock) while it runs.
const PidFileName = "mqdapr-run.pid"

// RunLock is a held pid file: the kernel drops the lock when the process ends, however it ends,
// so a lock that can be taken is never held by a live supervisor (no pid-reuse guess).
type RunLock struct {
	f    *os.File
	path string
	// Stale is the pid recorded by an earlier supervisor that ended without removing the file
	// (killed), 0 when there was none.
	Stale int
}

// Lock takes dir's pid file and writes the own pid into it. ErrStackRunning (naming the pid and
// what to do) when a live supervisor holds it.
func Lock(dir string) (*RunLock, error) {
	path := filepath.Join(dir, PidFileName)
	for {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, err
		}
		if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
			b, _ := os.ReadFile(path)
			f.Close()
			if errors.Is(err, syscall.EWOULDBLOCK) {
				pid := strings.TrimSpace(string(b))
				return nil, fmt.Errorf("%w: pid %s holds %s; stop it (Ctrl-C in its terminal, or `kill %s`: it stops its processes) "+
					"or start this one with another -dir and -mqtt", ErrStackRunning, pid, path, pid)
			}
			return nil, fmt.Errorf("devstack: locking %s: %w", path, err)
		}
		// The holder may have removed the file between our open and our lock: then we hold an
		// unlinked inode, and must lock the file that is there now.
		var st, cur syscall.Stat_t
		if syscall.Fstat(int(f.Fd()), &st) == nil && syscall.Stat(path, &cur) == nil && st.Ino == cur.Ino {
			l := &RunLock{f: f, path: path}
			b := make([]byte, 32)
			n, _ := f.ReadAt(b, 0)
			l.Stale, _ = strconv.Atoi(strings.TrimSpace(string(b[:n])))
			if err := f.Truncate(0); err != nil {
				f.Close()
				return nil, err
			}
			if _, err := f.WriteAt([]byte(strconv.Itoa(os.Getpid())+"\n"), 0); err != nil {
				f.Close()
				return nil, err
			}
			return l, nil
		}
		f.Close()
	}
}

// Release removes the pid file and drops the lock.
func (l *RunLock) Release() {
	os.Remove(l.path)
	l.f.Close()
}

// CheckAddrFree returns nil when addr (host:port) can be listened on. When it is taken, the error
// wraps ErrAddrTaken and names the listening process when it can be found (Linux /proc) and what to do.
func CheckAddrFree(addr, flagName string) error {
	l, err := net.Listen("tcp", addr)
	if err == nil {
		return l.Close()
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("devstack: cannot listen on %s (-%s): %w", addr, flagName, err)
	}
	_, port, _ := net.SplitHostPort(addr)
	p, _ := strconv.Atoi(port)
	if pid, cmd := owner(tcpListenInodes(p)); pid > 0 {
		return fmt.Errorf("%w: %s is taken by pid %d (%s), perhaps a stack left by an earlier run; stop it (`kill %d`) or pass -%s with a free address",
			ErrAddrTaken, addr, pid, cmd, pid, flagName)
	}
	return fmt.Errorf("%w: %s is taken by a process this user cannot see (`ss -ltnp 'sport = :%s'` shows it), perhaps a stack left by an earlier run; "+
		"stop it or pass -%s with a free address", ErrAddrTaken, addr, port, flagName)
}

// SocketDir is the folder of the components' unix sockets for a run folder: one per run folder and
// user, so that a run that was killed leaves its sockets where the next run finds them, and short
// (a socket path is limited to 108 bytes).
func SocketDir(runDir string) string {
	abs, err := filepath.Abs(runDir)
	if err != nil {
		abs = runDir
	}
	h := fnv.New32a()
	h.Write([]byte(abs))
	return filepath.Join(os.TempDir(), fmt.Sprintf("mqdapr-%d-%08x", os.Getuid(), h.Sum32()))
}

// CleanSockets removes the sockets in dir that nothing listens on (connect refused: provably
// stale; daprd's discovery would hang on one for about 25 s) and returns their paths. A socket that
// accepts a connection is served by a live process: ErrSocketInUse, naming it and what to do. A
// missing dir is not an error.
func CleanSockets(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var removed []string
	for _, e := range entries {
		if e.Type()&os.ModeSocket == 0 {
			continue
		}
		path := filepath.Join(dir, e.Name())
		c, err := net.DialTimeout("unix", path, time.Second)
		if err == nil {
			c.Close()
			who := "a live process"
			kill := "stop it"
			if pid, cmd := owner(unixListenInodes(path)); pid > 0 {
				who = fmt.Sprintf("pid %d (%s)", pid, cmd)
				kill = fmt.Sprintf("stop it (`kill %d`)", pid)
			}
			return removed, fmt.Errorf("%w: %s is served by %s, perhaps left by an earlier run; %s and start again, or use another -dir",
				ErrSocketInUse, path, who, kill)
		}
		if !errors.Is(err, syscall.ECONNREFUSED) {
			return removed, fmt.Errorf("devstack: checking socket %s: %w; remove it if no process serves it", path, err)
		}
		if err := os.Remove(path); err != nil {
			return removed, fmt.Errorf("devstack: removing stale socket %s: %w", path, err)
		}
		removed = append(removed, path)
	}
	return removed, nil
}

// tcpListenInodes returns the socket inodes listening on port (/proc/net/tcp and tcp6).
func tcpListenInodes(port int) map[string]bool {
	inodes := map[string]bool{}
	for _, f := range []string{"/proc/net/tcp", "/proc/net/tcp6"} {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(b), "\n")[1:] {
			// sl local_address rem_address st tx:rx tr:when retrnsmt uid timeout inode
			fs := strings.Fields(line)
			if len(fs) < 10 || fs[3] != "0A" { // 0A: LISTEN
				continue
			}
			i := strings.LastIndexByte(fs[1], ':')
			if p, err := strconv.ParseUint(fs[1][i+1:], 16, 32); err == nil && int(p) == port {
				inodes[fs[9]] = true
			}
		}
	}
	return inodes
}

// unixListenInodes returns the inodes of listening unix sockets bound to path (/proc/net/unix).
func unixListenInodes(path string) map[string]bool {
	inodes := map[string]bool{}
	b, err := os.ReadFile("/proc/net/unix")
	if err != nil {
		return inodes
	}
	for _, line := range strings.Split(string(b), "\n")[1:] {
		// Num RefCount Protocol Flags Type St Inode Path
		fs := strings.Fields(line)
		if len(fs) >= 8 && fs[7] == path && fs[3] == "00010000" { // __SO_ACCEPTCON: listening
			inodes[fs[6]] = true
		}
	}
	return inodes
}

// owner finds a process holding one of the socket inodes: its pid and command line, or 0.
func owner(inodes map[string]bool) (int, string) {
	if len(inodes) == 0 {
		return 0, ""
	}
	procs, _ := filepath.Glob("/proc/[0-9]*")
	for _, p := range procs {
		fds, err := os.ReadDir(filepath.Join(p, "fd"))
		if err != nil {
			continue
		}
		for _, fd := range fds {
			link, err := os.Readlink(filepath.Join(p, "fd", fd.Name()))
			if err != nil || !strings.HasPrefix(link, "socket:[") {
				continue
			}
			if inodes[strings.TrimSuffix(strings.TrimPrefix(link, "socket:["), "]")] {
				pid, _ := strconv.Atoi(filepath.Base(p))
				cmd, _ := os.ReadFile(filepath.Join(p, "cmdline"))
				s := strings.Join(strings.Fields(strings.ReplaceAll(string(cmd), "\x00", " ")), " ")
				if len(s) > 160 {
					s = s[:160] + "…"
				}
				return pid, s
			}
		}
	}
	return 0, ""
}

// ErrLeftovers is returned by Leftovers when processes of an earlier run are still running.
var ErrLeftovers = errors.New("devstack: processes of an earlier run are still running")

// Leftovers finds running processes of the stack that outlived their supervisor: a program from
// binDir (or a daprd) with an argument, or a socket folder variable, equal to or under one of
// markers (the run folder, the socket folder, the broker URL). The error wraps ErrLeftovers and
// lists them with the command that stops them. Other processes that use the folder (a `tail -f`
// of the lake) are not leftovers.
func Leftovers(binDir string, markers ...string) error {
	procs, _ := filepath.Glob("/proc/[0-9]*")
	var found, pids []string
	for _, p := range procs {
		pid, _ := strconv.Atoi(filepath.Base(p))
		if pid == os.Getpid() || zombie(p) {
			continue
		}
		exe, err := os.Readlink(filepath.Join(p, "exe"))
		if err != nil || !(strings.HasPrefix(exe, binDir+string(filepath.Separator)) || strings.HasPrefix(filepath.Base(exe), "daprd")) {
			continue
		}
		b, err := os.ReadFile(filepath.Join(p, "cmdline"))
		if err != nil {
			continue
		}
		args := strings.Split(strings.TrimRight(string(b), "\x00"), "\x00")
		if !anyUnder(args[min(1, len(args)):], markers) && !anyUnder(socketEnv(p), markers) {
			continue
		}
		cmd := strings.Join(args, " ")
		if len(cmd) > 120 {
			cmd = cmd[:120] + "…"
		}
		found = append(found, fmt.Sprintf("pid %d (%s)", pid, cmd))
		pids = append(pids, strconv.Itoa(pid))
	}
	if len(found) == 0 {
		return nil
	}
	return fmt.Errorf("%w: %s; stop them (`kill %s`) and start again", ErrLeftovers, strings.Join(found, ", "), strings.Join(pids, " "))
}

// socketEnv returns the process's socket folder variables (the components get only those).
func socketEnv(procDir string) []string {
	b, err := os.ReadFile(filepath.Join(procDir, "environ"))
	if err != nil {
		return nil
	}
	var vals []string
	for _, kv := range strings.Split(string(b), "\x00") {
		k, v, _ := strings.Cut(kv, "=")
		if k == "DAPR_COMPONENT_SOCKETS_FOLDER" || k == "DAPR_COMPONENTS_SOCKETS_FOLDER" {
			vals = append(vals, v)
		}
	}
	return vals
}

func anyUnder(vals, markers []string) bool {
	for _, a := range vals {
		for _, m := range markers {
			if a == m || strings.HasPrefix(a, m+string(filepath.Separator)) {
				return true
			}
		}
	}
	return false
}

// zombie reports whether /proc/<pid> is a process that has ended but is not reaped yet.
func zombie(procDir string) bool {
	b, err := os.ReadFile(filepath.Join(procDir, "stat"))
	if err != nil {
		return true
	}
	// pid (comm) state ...: comm may hold spaces and parentheses, the state follows the last ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] == 'Z' || s[i+2] == 'X'
}
