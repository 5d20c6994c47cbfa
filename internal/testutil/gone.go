package testutil

import (
	"os"
	"strconv"
	"strings"
	"testing"
	"time"
)

// Gone reports whether process pid has ended: it does not exist, or it is a zombie (ended, not yet
// reaped: an orphan waits for its new parent, which may never reap it in a container) whose other
// threads have exited too (until the last one has, its files, sockets included, are still open).
func Gone(pid int) bool {
	dir := "/proc/" + strconv.Itoa(pid)
	b, err := os.ReadFile(dir + "/stat")
	if err != nil {
		return true
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')') // the state follows "(comm)", and comm may hold anything
	if i < 0 || i+2 >= len(s) || (s[i+2] != 'Z' && s[i+2] != 'X') {
		return false
	}
	tasks, err := os.ReadDir(dir + "/task")
	return err != nil || len(tasks) <= 1
}

// WaitGone waits until every process in pids has ended; it fails the test with the survivors
// (name: pid) after timeout.
func WaitGone(t testing.TB, pids map[string]int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		var alive []string
		for name, pid := range pids {
			if !Gone(pid) {
				alive = append(alive, name+"="+strconv.Itoa(pid))
			}
		}
		if len(alive) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("processes still running %s after the supervisor ended: %s", timeout, strings.Join(alive, " "))
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

// ChildPids returns the pids of ppid's children (from /proc/*/stat), by command name.
func ChildPids(ppid int) map[string]int {
	out := map[string]int{}
	dirs, _ := os.ReadDir("/proc")
	for _, d := range dirs {
		pid, err := strconv.Atoi(d.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + d.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		open, end := strings.IndexByte(s, '('), strings.LastIndexByte(s, ')')
		if open < 0 || end < open {
			continue
		}
		f := strings.Fields(s[end+1:]) // state ppid ...
		if len(f) > 1 && f[1] == strconv.Itoa(ppid) && f[0] != "Z" {
			out[s[open+1:end]+"/"+d.Name()] = pid
		}
	}
	return out
}
