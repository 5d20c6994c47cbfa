package main

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/mqdapr/mqdapr/broker"

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

// With a password file, `healthcheck -metrics-addr` probes /readyz: healthy, and the broker logs
// no "authentication refused" for it, where the MQTT probe (no credentials) costs one such line
// each time (Compose probes every 2 s). With nothing at -metrics-addr it falls back to the MQTT
// probe; once the broker has stopped it is unhealthy.
func TestHealthcheckReadyzWithPasswordFile(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "passwd")
	require.NoError(t, broker.SetPassword(users, "u", []byte("pw"), bcrypt.MinCost))
	var logs testutil.SyncBuffer
	p := runBrokerProcess(t, &logs, "-data-dir", filepath.Join(dir, "data"), "-password-file", users, "-log-level", "info")
	addr := p.addr
	metrics := strings.TrimSuffix(strings.TrimPrefix(p.metricsURL, "http://"), "/metrics")

	env := []string{helperEnv + "=1"}
	for range 3 {
		code, stdout := testutil.Healthcheck(t, env, "-addr", addr, "-metrics-addr", metrics)
		require.Equal(t, 0, code, stdout)
		require.Contains(t, stdout, "healthy: http://"+metrics+"/readyz: HTTP 200")
	}
	_, port, _ := strings.Cut(metrics, ":")
	code, stdout := testutil.Healthcheck(t, env, "-addr", addr, "-metrics-addr", "0.0.0.0:"+port)
	require.Equal(t, 0, code, stdout)
	require.NotContains(t, logs.String(), "authentication refused", "the /readyz probe makes no MQTT connection")

	code, stdout = testutil.Healthcheck(t, env, "-addr", addr)
	require.Equal(t, 0, code, stdout)
	require.Contains(t, stdout, "CONNACK 0x87: the probe has no credentials")
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "authentication refused") }, 10*time.Second, 20*time.Millisecond,
		"the MQTT probe is refused and logged (what the /readyz probe avoids)")

	free := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	code, stdout = testutil.Healthcheck(t, env, "-addr", addr, "-metrics-addr", free)
	require.Equal(t, 0, code, stdout)
	require.Contains(t, stdout, "(nothing listens at http://"+free+"/readyz)")

	p.stop()
	code, stdout = testutil.Healthcheck(t, env, "-addr", addr, "-metrics-addr", metrics)
	require.Equal(t, 1, code, stdout)
	require.Contains(t, stdout, "unhealthy: ")
}
