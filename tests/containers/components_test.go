package containers

import (
	"context"
	"testing"
	"time"

	"github.com/moby/moby/api/types/container"
	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// The component and app images start as 65532 with nothing mounted and turn healthy through
// their HEALTHCHECK: each component has created its socket in the image's socket folder (owned
// by 65532) and answers Ping on it; the app answers /healthz.
func TestComponentAndAppImagesHealthy(t *testing.T) {
	requireDocker(t)
	t.Parallel()
	tags := buildImages(t, "pubsub-mqtt5", "state-kv", "app")
	for program, want := range map[string]string{
		"pubsub-mqtt5": "healthy: /tmp/dapr-components-sockets/mqttv5.sock answered Ping",
		"state-kv":     "healthy: /tmp/dapr-components-sockets/mqttkv.sock answered Ping",
		"app":          "healthy: http://127.0.0.1:8081/healthz: HTTP 200",
	} {
		t.Run(program, func(t *testing.T) {
			t.Parallel() // the three wait for their first health check together
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			c, err := testcontainers.Run(ctx, tags[program],
				testcontainers.WithWaitStrategy(wait.ForHealthCheck().WithStartupTimeout(90*time.Second)))
			testcontainers.CleanupContainer(t, c)
			require.NoError(t, err)
			status, out := healthLog(t, c)
			require.Equal(t, container.Healthy, status)
			require.Equal(t, want, out)
			in, err := c.Inspect(ctx)
			require.NoError(t, err)
			require.Equal(t, "65532:65532", in.Config.User)
		})
	}
}
