package containers

import (
	"testing"
	"time"
)

// The whole chain as containers: devicesim → broker → pubsub-mqtt5 → daprd → app → lake, with
// the app's state in state-kv on the same broker. Every scenario builds its own chain (network,
// volumes, containers) from one build of the images, and ends with every reading in the lake
// exactly once.
func TestChain(t *testing.T) {
	requireDocker(t)
	t.Parallel()
	images := buildImages(t, chainPrograms...)

	t.Run("ExactlyOnce", func(t *testing.T) {
		c := newChain(t, images)
		r := c.startReplica("replica-1")
		p := c.publish("devsim-1", 200, 0, 1)
		p.wait()
		c.assertExactlyOnce(r.app, 200, 2*time.Minute)
	})
}
