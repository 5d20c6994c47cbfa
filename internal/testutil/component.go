package testutil

import (
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// Component is a pluggable component command run as a child process: the test binary itself,
// with env making its TestMain call main(), serving in its own socket folder.
type Component struct {
	Folder string // DAPR_COMPONENT_SOCKETS_FOLDER
	Socket string // Folder/<name>.sock
	cmd    *exec.Cmd
	exited chan struct{}
}

// StartComponent starts the component registered as name and waits (up to 30 s) for its socket.
// The process is killed at the end of the test.
func StartComponent(t testing.TB, name string, env ...string) *Component {
	t.Helper()
	return StartComponentIn(t, name, t.TempDir(), nil, append([]string{"MQDAPR_LOG_LEVEL=fatal"}, env...)...)
}

// StartComponentIn is StartComponent serving in folder, with the process's stdout and stderr
// written to out (nil: discarded).
func StartComponentIn(t testing.TB, name, folder string, out io.Writer, env ...string) *Component {
	t.Helper()
	c := &Component{Folder: folder, exited: make(chan struct{})}
	c.Socket = filepath.Join(c.Folder, name+".sock")
	c.cmd = exec.Command(os.Args[0], "-test.run=^$")
	c.cmd.Env = append(append(os.Environ(), env...), "DAPR_COMPONENT_SOCKETS_FOLDER="+c.Folder)
	c.cmd.Stdout, c.cmd.Stderr = out, out
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = c.cmd.Wait(); close(c.exited) }()
	t.Cleanup(c.Kill)
	deadline := time.Now().Add(30 * time.Second)
	for {
		if _, err := os.Stat(c.Socket); err == nil {
			return c
		}
		select {
		case <-c.exited:
			t.Fatalf("component %s exited before creating %s", name, c.Socket)
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("component %s: no socket %s after 30 s", name, c.Socket)
		}
	}
}

// Kill kills the process with SIGKILL (its socket file stays behind) and waits for it.
func (c *Component) Kill() { Stop(c.cmd.Process, c.exited, syscall.SIGKILL, 0) }
