package e2e

import (
	"bufio"
	"fmt"
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

// `make run` (cmd/mqdapr-run): everything comes up and rows reach the lake through 4 telemetry
// partitions; when the pub/sub component is killed, it is restarted, daprd is restarted after it,
// and rows keep coming; Ctrl-C stops everything and leaves no socket behind.
func TestMakeRun(t *testing.T) {
	needDaprd(t)
	dir := t.TempDir()
	port := testutil.FreePort(t)
	cmd := exec.Command(filepath.Join(bins.dir, "mqdapr-run"), "-bin", bins.dir, "-dir", dir,
		"-mqtt", fmt.Sprintf("127.0.0.1:%d", port), "-rate", "50")
	cmd.Dir = bins.root
	cmd.Env = append(os.Environ(), "DAPRD="+bins.daprd)
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = cmd.Stdout
	require.NoError(t, cmd.Start())
	done := make(chan struct{})
	var mu sync.Mutex
	var lines []string
	go func() {
		defer close(done)
		sc := bufio.NewScanner(out)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			mu.Lock()
			lines = append(lines, sc.Text())
			mu.Unlock()
		}
		_ = cmd.Wait()
	}()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			mu.Lock()
			n := len(lines)
			t.Logf("last output:\n%s", strings.Join(lines[max(0, n-60):], "\n"))
			mu.Unlock()
		}
	})
	written := regexp.MustCompile(`progress: .*written=(\d+)`)
	lastWritten := func() int {
		mu.Lock()
		defer mu.Unlock()
		for i := len(lines) - 1; i >= 0; i-- {
			if m := written.FindStringSubmatch(lines[i]); m != nil {
				n, _ := strconv.Atoi(m[1])
				return n
			}
		}
		return 0
	}
	has := func(s string) bool {
		mu.Lock()
		defer mu.Unlock()
		for _, l := range lines {
			if strings.Contains(l, s) {
				return true
			}
		}
		return false
	}
	require.Eventually(t, func() bool { return lastWritten() > 0 }, 90*time.Second, 100*time.Millisecond, "rows reach the lake")
	assert.True(t, has("partitions=8"), "the app subscribes to 8 telemetry partitions")

	pkill := exec.Command("pkill", "-KILL", "-f", filepath.Join(bins.dir, "pubsub-mqtt5"))
	require.NoError(t, pkill.Run(), "kill the pub/sub component")
	require.Eventually(t, func() bool { return has("restarting daprd") }, 60*time.Second, 100*time.Millisecond)
	before := lastWritten()
	require.Eventually(t, func() bool { return lastWritten() > before+20 }, 90*time.Second, 100*time.Millisecond,
		"delivery resumes after the component and daprd restarted")

	require.NoError(t, cmd.Process.Signal(syscall.SIGINT))
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("make run did not stop on Ctrl-C")
	}
	assert.True(t, has("stopped; data kept"))
	socks, _ := filepath.Glob(filepath.Join(devstack.SocketDir(dir), "*.sock"))
	assert.Empty(t, socks, "no stale socket")
	rows, _ := lakeRows(t, filepath.Join(dir, "lake"))
	for id, n := range rows {
		assert.Equal(t, 1, n, "reading %s has %d rows", id, n)
	}
}
