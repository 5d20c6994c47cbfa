package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

// helperEnv makes the test binary run main() instead of the tests (the component, or its healthcheck).
const helperEnv = "PUBSUBMQTT5_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// `pubsub-mqtt5 healthcheck` pings the component process on its socket, found as the server finds
// it (DAPR_COMPONENT_SOCKETS_FOLDER): exit 0 while it serves, exit 1 once the process is killed.
func TestHealthcheckProcess(t *testing.T) {
	c := testutil.StartComponent(t, "mqttv5", helperEnv+"=1")
	env := []string{helperEnv + "=1", "DAPR_COMPONENT_SOCKETS_FOLDER=" + c.Folder}
	code, out := testutil.Healthcheck(t, env)
	require.Equal(t, 0, code, out)
	require.Equal(t, "healthy: "+c.Socket+" answered Ping\n", out)

	c.Kill()
	code, out = testutil.Healthcheck(t, env)
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "unhealthy: "+c.Socket)
}

// A component that cannot create its socket (here: the folder is missing; in a container: a
// folder it may not write) exits 1 saying why, instead of hanging in the SDK's Run with nothing
// served (components-go-sdk v0.3.0 waits for ever after a failed listen).
func TestUnusableSocketFolderExits(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	missing := filepath.Join(t.TempDir(), "missing")
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", "DAPR_COMPONENT_SOCKETS_FOLDER="+missing)
	out, err := cmd.CombinedOutput()
	require.NoError(t, ctx.Err(), "the component did not exit: %s", out)
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "%s", out)
	require.Equal(t, 1, ee.ExitCode(), "%s", out)
	require.Contains(t, string(out), "cannot create the socket "+filepath.Join(missing, "mqttv5.sock"))
}

// The socket is Srwxrwx--- (daprd runs as the component's user or in its group; other users may
// not connect) and a world-writable socket folder is warned about, with mqdapr's server and the SDK's.
func TestSocketMode(t *testing.T) {
	t.Run("own server", func(t *testing.T) { testutil.CheckSocketMode(t, "mqttv5", helperEnv+"=1") })
	t.Run("sdk server", func(t *testing.T) {
		testutil.CheckSocketMode(t, "mqttv5", helperEnv+"=1", "MQDAPR_PUBSUB_SERVER=sdk")
	})
}
