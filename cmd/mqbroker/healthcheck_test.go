package main

import (
	"bufio"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

// helperEnv makes the test binary run main() instead of the tests (mqbroker, or its healthcheck).
const helperEnv = "MQBROKER_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// `mqbroker healthcheck` against the mqbroker process: exit 0 and "healthy" while it serves, also
// when the address is the 0.0.0.0 it listens on; exit 1 and the reason once it has stopped.
func TestHealthcheckProcess(t *testing.T) {
	broker := exec.Command(os.Args[0], "-addr", "127.0.0.1:0", "-tls-addr", "", "-data-dir", filepath.Join(t.TempDir(), "data"), "-log-level", "error")
	broker.Env = append(os.Environ(), helperEnv+"=1")
	out, err := broker.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, broker.Start())
	exited := make(chan struct{})
	go func() { _ = broker.Wait(); close(exited) }()
	t.Cleanup(func() { testutil.Stop(broker.Process, exited, syscall.SIGKILL, 0) })

	line, err := bufio.NewReader(out).ReadString('\n') // "listening [127.0.0.1:port]"
	require.NoError(t, err)
	addr := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(line), "listening ["), "]")
	_, port, ok := strings.Cut(addr, ":")
	require.True(t, ok, line)

	env := []string{helperEnv + "=1"}
	code, stdout := testutil.Healthcheck(t, env, "-addr", addr)
	require.Equal(t, 0, code, stdout)
	require.Contains(t, stdout, "healthy: "+addr+" accepted")
	code, stdout = testutil.Healthcheck(t, env, "-addr", "0.0.0.0:"+port)
	require.Equal(t, 0, code, stdout)

	testutil.Stop(broker.Process, exited, syscall.SIGTERM, 10*time.Second)
	code, stdout = testutil.Healthcheck(t, env, "-addr", addr)
	require.Equal(t, 1, code, stdout)
	require.Contains(t, stdout, "unhealthy: ")
	require.Contains(t, stdout, "connection refused")

	code, _ = testutil.Healthcheck(t, env, "-addr", addr, "extra")
	require.Equal(t, 2, code)
}
