package main

import (
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

// `state-kv healthcheck` pings the component process on its socket, found as the server finds
// it (DAPR_COMPONENT_SOCKETS_FOLDER): exit 0 while it serves; exit 1 once the process is killed
// (the socket file left behind refuses connections) and when there is no socket.
func TestHealthcheckProcess(t *testing.T) {
	c := testutil.StartComponent(t, "mqttkv", helperEnv+"=1")
	env := []string{helperEnv + "=1", "DAPR_COMPONENT_SOCKETS_FOLDER=" + c.Folder}
	code, out := testutil.Healthcheck(t, env)
	require.Equal(t, 0, code, out)
	require.Equal(t, "healthy: "+c.Socket+" answered Ping\n", out)

	c.Kill()
	code, out = testutil.Healthcheck(t, env)
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "unhealthy: "+c.Socket)

	code, out = testutil.Healthcheck(t, env, "-socket", c.Folder+"/none.sock")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "no such file")
}
