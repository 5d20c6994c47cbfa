package containers

import (
	"context"
	"testing"
	"time"

	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
)

// The whole chain as containers, as `make run` wires it: devicesim → broker → pubsub-mqtt5 →
// daprd → app → lake, the app's dedup records and last-known values in state-kv on the same
// broker. Each scenario builds a chain of its own (network, volumes, containers) from one build of
// the images, injects its fault mid-stream (some readings in the lake, the rest queued in the
// broker or still being published) and ends with every reading in the lake exactly once (read out
// of the lake volume). devicesim publishes as fast as the broker acknowledges (~250 msg/s here),
// faster than the chain writes the lake, so a kill finds a backlog queued and a full window of
// messages in flight; the partition needs readings published during and after it, at 25 msg/s.
func TestChain(t *testing.T) {
	requireDocker(t)
	t.Parallel()
	images := buildImages(t, chainPrograms...)

	// `docker kill` of the broker, started again on its volume: what it acknowledged (devicesim's
	// readings, the components' sessions and in-flight messages, the dedup records) survives.
	t.Run("BrokerKill", func(t *testing.T) {
		t.Parallel()
		c := newChain(t, images)
		r := c.startReplica("replica-1")
		const n = 600
		p := c.publish("devsim", n, 0, 1)
		at := c.waitRows(r.app, 100, 2*time.Minute, "before the kill")
		require.Less(t, at, n, "the kill comes mid-stream")
		t.Logf("broker killed with %d of %d readings in the lake", at, n)
		c.kill(c.broker)
		c.start(c.broker)
		p.wait()
		c.assertExactlyOnce(r.app, n, 3*time.Minute)
	})

	// `docker kill` of each component container in turn, started again, and daprd after it (daprd
	// never re-initialises a restarted component).
	t.Run("ComponentKill", func(t *testing.T) {
		t.Parallel()
		c := newChain(t, images)
		r := c.startReplica("replica-1")
		const n = 900
		p := c.publish("devsim", n, 0, 1)
		for i, comp := range []*testcontainers.DockerContainer{r.pubsub, r.state} {
			at := c.waitRows(r.app, 100+300*i, 2*time.Minute, "before the kill")
			require.Less(t, at, n, "the kill comes mid-stream")
			t.Logf("%s killed with %d of %d readings in the lake", comp.GetContainerID()[:12], at, n)
			c.kill(comp)
			c.start(comp)
			r.restartDaprd()
		}
		p.wait()
		c.assertExactlyOnce(r.app, n, 3*time.Minute)
	})

	// Two replicas, each a pod of its own (components, daprd, app, a stable client id), share the
	// telemetry subscription; one app is killed mid-stream and comes back with its pod (daprd
	// lives in the app's network namespace, so it is restarted with it). Nothing lost, nothing
	// written twice, and both replicas wrote rows.
	t.Run("ReplicaKill", func(t *testing.T) {
		t.Parallel()
		c := newChain(t, images)
		r1, r2 := c.startReplica("replica-1"), c.startReplica("replica-2")
		const n = 900
		p := c.publish("devsim", n, 0, 1)
		require.EventuallyWithT(t, func(ct *assert.CollectT) {
			_, byReplica, err := c.readLake(r2.app)
			require.NoError(ct, err)
			require.GreaterOrEqual(ct, byReplica["replica-1"], 30, "rows of replica-1")
			require.GreaterOrEqual(ct, byReplica["replica-2"], 30, "rows of replica-2")
		}, 2*time.Minute, 250*time.Millisecond, "both replicas write rows")
		at := c.rowCount(r2.app)
		require.Less(t, at, n, "the kill comes mid-stream")
		t.Logf("replica-1's app killed with %d of %d readings in the lake", at, n)
		c.kill(r1.app)
		c.kill(r1.daprd)
		c.start(r1.app)
		c.start(r1.daprd)
		r1.waitDaprd()
		p.wait()
		byReplica := c.assertExactlyOnce(r2.app, n, 3*time.Minute)
		require.Positive(t, byReplica["replica-1"])
		require.Positive(t, byReplica["replica-2"])
	})

	// Both component containers lose the network (the broker) for 20 s mid-stream, then get it
	// back: delivery resumes (new rows after the reconnection) and nothing is lost.
	t.Run("Partition", func(t *testing.T) {
		t.Parallel()
		c := newChain(t, images)
		r := c.startReplica("replica-1")
		const n = 1200
		p := c.publish("devsim", n, 25, 1)
		at := c.waitRows(r.app, 100, 2*time.Minute, "before the partition")
		require.Less(t, at, n, "the partition comes mid-stream")
		c.partition(20*time.Second, map[*testcontainers.DockerContainer]string{
			r.pubsub: r.name + "-pubsub", r.state: r.name + "-state"})
		back := c.rowCount(r.app)
		require.Less(t, back, n, "the reconnection comes mid-stream")
		reconnected := time.Now()
		c.waitRows(r.app, back+1, 2*time.Minute, "delivery resumes after the reconnection")
		t.Logf("partitioned with %d readings in the lake, %d at the reconnection; new rows %s after it",
			at, back, time.Since(reconnected).Round(100*time.Millisecond))
		p.wait()
		c.assertExactlyOnce(r.app, n, 3*time.Minute)
	})
}

// partition disconnects the containers from the chain's network for d (the fault itself: the
// one wait that is not on a condition), then connects them again with their aliases.
func (c *chain) partition(d time.Duration, aliases map[*testcontainers.DockerContainer]string) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), d+time.Minute)
	defer cancel()
	for ctr := range aliases {
		_, err := c.cli.NetworkDisconnect(ctx, c.net.ID, client.NetworkDisconnectOptions{Container: ctr.GetContainerID()})
		require.NoError(c.t, err)
	}
	time.Sleep(d)
	for ctr, alias := range aliases {
		_, err := c.cli.NetworkConnect(ctx, c.net.ID, client.NetworkConnectOptions{Container: ctr.GetContainerID(),
			EndpointConfig: &network.EndpointSettings{Aliases: []string{alias}}})
		require.NoError(c.t, err)
	}
}
