package devstack

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

const helperEnv = "MQDAPR_DEVSTACK_HELPER"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) == "supervise" {
		superviseSleepers()
		return
	}
	os.Exit(m.Run())
}

// superviseSleepers is the helper process: a Supervisor of two children, until SIGTERM.
func superviseSleepers() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM)
	defer stop()
	s := &Supervisor{Out: os.Stdout}
	if err := s.Run(ctx, []Spec{sleeper("first", false, false), sleeper("second", false, false)}); err != nil {
		fmt.Println("helper:", err)
		os.Exit(1)
	}
}

// A supervisor killed with SIGKILL takes its processes with it (they run in their own process
// groups, so nothing else would stop them).
func TestChildrenDieWithKilledSupervisor(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=supervise")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	t.Cleanup(func() { testutil.Stop(cmd.Process, done, syscall.SIGKILL, 10*time.Second) })
	up := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		started := 0
		for sc.Scan() {
			if strings.HasSuffix(sc.Text(), "] started") {
				if started++; started == 2 {
					close(up)
				}
			}
		}
		_ = cmd.Wait()
	}()
	select {
	case <-up:
	case <-done:
		t.Fatal("helper supervisor exited before its processes were up")
	case <-time.After(30 * time.Second):
		t.Fatal("helper supervisor's processes not up within 30 s")
	}
	pids := testutil.ChildPids(cmd.Process.Pid)
	require.Len(t, pids, 2)
	t.Cleanup(func() { // today's code leaves them running: do not leak them past the test
		for _, pid := range pids {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	})
	require.NoError(t, cmd.Process.Kill())
	<-done
	testutil.WaitGone(t, pids, 10*time.Second)
}

// The kernel's parent-death signal follows the thread that forked the child. A child must not be
// killed when the goroutine that asked for it ends on a thread that then exits (a goroutine that
// exits while locked to its thread takes the thread with it), only when the supervisor does.
func TestChildSurvivesExitOfRequestingThread(t *testing.T) {
	cmd := exec.Command("/bin/sh", "-c", "read x; echo alive")
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	stdout, err := cmd.StdoutPipe()
	require.NoError(t, err)
	tid := make(chan int, 1)
	started := make(chan error, 1)
	for {
		// The main thread is never terminated (Go wedges it instead): ask from another one.
		ok := make(chan bool)
		go func() {
			runtime.LockOSThread() // never unlocked: the thread exits with this goroutine
			if syscall.Gettid() == os.Getpid() {
				ok <- false
				return
			}
			ok <- true
			tid <- syscall.Gettid()
			started <- startCmd(cmd)
		}()
		if <-ok {
			break
		}
	}
	require.NoError(t, <-started)
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	task := fmt.Sprintf("/proc/self/task/%d", <-tid)
	require.Eventually(t, func() bool { _, err := os.Stat(task); return os.IsNotExist(err) }, 10*time.Second, 10*time.Millisecond,
		"the requesting goroutine's thread exits")
	// A parent-death signal would have been sent when that thread exited: the child must still answer.
	_, err = io.WriteString(stdin, "ping\n")
	require.NoError(t, err, "the child was killed when the requesting thread exited")
	line, err := bufio.NewReader(stdout).ReadString('\n')
	require.NoError(t, err, "the child was killed when the requesting thread exited")
	require.Equal(t, "alive\n", line)
}
