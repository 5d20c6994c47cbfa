package main

import (
	"os"
	"testing"

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
