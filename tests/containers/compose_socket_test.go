package containers

import (
	"context"
	"io"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// The socket contract of docker-compose.yaml's groups: the socket volume takes the ownership of
// the component image's socket folder (65532:65532, 0755), so a component running as another
// user cannot create its socket there and exits 1 saying so (components-go-sdk alone would hang); the component running as 65532
// creates it, and daprd-watch in another container (daprd's side, as 65532) connects to it.
func TestSocketContract(t *testing.T) {
	requireDocker(t)
	t.Parallel()
	tags := buildImages(t, "pubsub-mqtt5", "daprd-watch")
	vol := volume(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	mount := testcontainers.WithMounts(testcontainers.VolumeMount(vol, "/tmp/dapr-components-sockets"))

	// The first container on the empty volume fills it from the image: the folder owned by 65532.
	other, err := testcontainers.Run(ctx, tags["pubsub-mqtt5"], mount,
		testcontainers.WithConfigModifier(func(c *container.Config) { c.User = "1000:1000" }),
		testcontainers.WithWaitStrategy(wait.ForExit().WithExitTimeout(time.Minute)))
	testcontainers.CleanupContainer(t, other)
	require.NoError(t, err)
	st, err := other.State(ctx)
	require.NoError(t, err)
	require.NotEqual(t, 0, st.ExitCode, "a component as uid 1000 served in a folder owned by 65532")
	logs := containerLogs(t, other)
	require.Contains(t, logs, "not starting: cannot create the socket /tmp/dapr-components-sockets/mqttv5.sock")
	require.Contains(t, logs, "permission denied (the folder must exist and be writable by uid 1000 gid 1000")

	comp, err := testcontainers.Run(ctx, tags["pubsub-mqtt5"], mount,
		testcontainers.WithWaitStrategy(wait.ForHealthCheck().WithStartupTimeout(90*time.Second)))
	testcontainers.CleanupContainer(t, comp)
	require.NoError(t, err)

	watch, err := testcontainers.Run(ctx, tags["daprd-watch"], mount,
		testcontainers.WithCmd("-component", "pubsub:/tmp/dapr-components-sockets/mqttv5.sock", "--", "/daprd-watch", "pause"),
		testcontainers.WithWaitStrategy(wait.ForLog("daprd started").WithStartupTimeout(time.Minute)))
	testcontainers.CleanupContainer(t, watch)
	require.NoError(t, err)
	in, err := watch.Inspect(ctx)
	require.NoError(t, err)
	require.Equal(t, "65532:65532", in.Config.User)
	require.Regexp(t, `socket=/tmp/dapr-components-sockets/mqttv5.sock owner="uid=65532 gid=65532 mode=S`, containerLogs(t, watch))
}

// containerLogs is what c wrote to stdout and stderr.
func containerLogs(t *testing.T, c *testcontainers.DockerContainer) string {
	t.Helper()
	r, err := c.Logs(context.Background())
	require.NoError(t, err)
	defer r.Close()
	b, err := io.ReadAll(r)
	require.NoError(t, err)
	return string(b)
}
