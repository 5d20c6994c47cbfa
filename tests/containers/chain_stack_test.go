package containers

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/pkg/stdcopy"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/network"
)

// The paths inside the images that the chain shares through volumes and files.
const (
	socketDir    = "/tmp/dapr-components-sockets" // the components' and daprd's default socket folder
	lakeDir      = "/var/lib/connector/lake"      // the app image's LAKE_DIR
	resourcesDir = "/resources"                   // daprd's --resources-path, written as files
	brokerURL    = "mqtt://broker:1883"           // the broker's alias on the chain's network
)

// chainPrograms are the programs whose images make up the chain, built once for all scenarios.
var chainPrograms = []string{"mqbroker", "pubsub-mqtt5", "state-kv", "app", "devicesim", "daprd"}

// chain is the whole stack as containers on a private network of its own, as `make run` wires
// it (cmd/mqdapr-run), with the pods of Kubernetes played by groups of containers: the broker on
// a named volume (alias "broker"), and per app replica the two component containers and daprd
// sharing a socket volume, daprd in the app container's network namespace (the app reaches
// daprd's gRPC API on 127.0.0.1, as in a pod), and every replica's app writing to one shared
// lake volume (the README's assumption 5: replicas reconcile each other's claims by reading the
// files). Everything is removed at the end of the test, also on failure.
type chain struct {
	t      *testing.T
	images map[string]string
	cli    *testcontainers.DockerClient
	net    *testcontainers.DockerNetwork
	broker *testcontainers.DockerContainer
	lake   string // the lake volume
	auth   *brokerAuth
}

// replica is one app replica's pod: its components, its daprd and the app, with a stable
// name that is the app's -replica and both components' clientID.
type replica struct {
	name          string
	pubsub, state *testcontainers.DockerContainer
	app, daprd    *testcontainers.DockerContainer
	c             *chain
	daprdStarts   int // how often daprd has reported itself running
	socketVol     string
}

// newChain creates the network and the lake volume and starts the broker on a fresh volume.
func newChain(t *testing.T, images map[string]string) *chain {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	nw, err := network.New(ctx)
	testcontainers.CleanupNetwork(t, nw) // registered first, so removed after the containers on it
	require.NoError(t, err)
	// With credentials, as off loopback: a password file and an ACL (chainACL); each client gets
	// its password as a file.
	c := &chain{t: t, images: images, cli: dockerClient(t), net: nw, lake: volume(t), auth: newBrokerAuth(t, chainACL, chainUser, devicesUser)}
	c.broker = c.run("broker", images["mqbroker"],
		network.WithNetwork([]string{"broker"}, nw),
		testcontainers.WithMounts(testcontainers.VolumeMount(volume(t), "/var/lib/mqbroker")),
		testcontainers.WithCmd(brokerCmd()...), c.auth.brokerFiles())
	return c
}

// run starts a container, without waiting for it to be healthy (waitHealthy does), and removes
// it at the end of the test; its output is logged then if the test failed.
func (c *chain) run(name, image string, opts ...testcontainers.ContainerCustomizer) *testcontainers.DockerContainer {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ctr, err := testcontainers.Run(ctx, image, opts...)
	testcontainers.CleanupContainer(c.t, ctr)
	c.t.Cleanup(func() { // before the removal registered above
		if c.t.Failed() && ctr != nil {
			c.t.Logf("--- output of %s (last 100 lines):\n%s", name, c.logs(ctr, "100"))
		}
	})
	require.NoError(c.t, err, "starting %s", name)
	return ctr
}

// logs is a container's output so far (stdout and stderr interleaved), its last tail lines
// ("all": everything).
func (c *chain) logs(ctr *testcontainers.DockerContainer, tail string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	r, err := c.cli.ContainerLogs(ctx, ctr.GetContainerID(), client.ContainerLogsOptions{ShowStdout: true, ShowStderr: true, Tail: tail})
	if err != nil {
		return "(no logs: " + err.Error() + ")"
	}
	defer r.Close()
	var out bytes.Buffer
	if _, err := stdcopy.StdCopy(&out, &out, r); err != nil {
		return out.String() + "\n(reading the logs: " + err.Error() + ")"
	}
	return out.String()
}

// startReplica starts one app replica's pod: both components and the app side by side, and
// once they are healthy (Docker runs each image's HEALTHCHECK: a component answers Ping on its
// socket, the app /healthz; the broker too, started by newChain) daprd, with the component
// resources `make run` writes, pointed at the broker's alias. It returns once daprd reports
// itself running.
func (c *chain) startReplica(name string) *replica {
	c.t.Helper()
	r := &replica{name: name, c: c, socketVol: volume(c.t)}
	sockets := testcontainers.WithMounts(testcontainers.VolumeMount(r.socketVol, socketDir))
	r.pubsub = c.run(name+"-pubsub", c.images["pubsub-mqtt5"], network.WithNetwork([]string{name + "-pubsub"}, c.net), sockets, c.auth.secret(chainUser))
	r.state = c.run(name+"-state", c.images["state-kv"], network.WithNetwork([]string{name + "-state"}, c.net), sockets, c.auth.secret(chainUser))
	// The app owns the pod's network namespace, which daprd joins.
	r.app = c.run(name+"-app", c.images["app"], network.WithNetwork([]string{name + "-app"}, c.net),
		testcontainers.WithMounts(testcontainers.VolumeMount(c.lake, lakeDir)),
		testcontainers.WithCmd("-replica", name))
	c.waitHealthy(c.broker, r.pubsub, r.state, r.app)
	pubsubYAML, stateYAML := resources(name)
	r.daprd = c.run(name+"-daprd", c.images["daprd"],
		testcontainers.WithCmd("/daprd", "--app-id", "connector", "--resources-path", resourcesDir,
			"--app-port", "6002", "--app-protocol", "grpc", "--dapr-http-port", "3500", "--dapr-grpc-port", "50001",
			"--log-level", "info"),
		sockets,
		testcontainers.WithFiles(
			testcontainers.ContainerFile{Reader: strings.NewReader(pubsubYAML), ContainerFilePath: resourcesDir + "/pubsub.yaml", FileMode: 0o644},
			testcontainers.ContainerFile{Reader: strings.NewReader(stateYAML), ContainerFilePath: resourcesDir + "/state.yaml", FileMode: 0o644}),
		testcontainers.WithHostConfigModifier(func(hc *container.HostConfig) {
			hc.NetworkMode = container.NetworkMode("container:" + r.app.GetContainerID())
		}))
	r.waitDaprd()
	return r
}

// daprdRunning is what daprd logs once it has loaded its components and is serving the app.
const daprdRunning = "dapr initialized. Status: Running."

// waitDaprd waits until daprd has reported itself running once more than before.
func (r *replica) waitDaprd() {
	r.c.t.Helper()
	r.daprdStarts++
	require.Eventually(r.c.t, func() bool {
		return strings.Count(r.c.logs(r.daprd, "all"), daprdRunning) >= r.daprdStarts
	}, 90*time.Second, 250*time.Millisecond, "%s's daprd reports %q (start %d)", r.name, daprdRunning, r.daprdStarts)
}

// kill is `docker kill` (SIGKILL) of a container: no shutdown of any kind.
func (c *chain) kill(ctr *testcontainers.DockerContainer) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err := c.cli.ContainerKill(ctx, ctr.GetContainerID(), client.ContainerKillOptions{Signal: "KILL"})
	require.NoError(c.t, err)
	require.Eventually(c.t, func() bool {
		s, err := ctr.State(ctx)
		return err == nil && !s.Running
	}, 30*time.Second, 100*time.Millisecond, "the killed container stops")
}

// start starts a stopped container again (the same container: its file system, volumes, name
// and aliases) and waits until it is healthy if its image has a health check.
func (c *chain) start(ctr *testcontainers.DockerContainer) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	require.NoError(c.t, ctr.Start(ctx))
	in, err := ctr.Inspect(ctx)
	require.NoError(c.t, err)
	if in.Config.Healthcheck != nil {
		c.waitHealthy(ctr)
	}
}

// waitHealthy waits until Docker reports every container healthy, failing early on one that
// has stopped.
func (c *chain) waitHealthy(ctrs ...*testcontainers.DockerContainer) {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	for _, ctr := range ctrs {
		var s *container.State
		require.Eventually(c.t, func() bool {
			var err error
			s, err = ctr.State(ctx)
			return err == nil && (!s.Running || s.Health != nil && s.Health.Status == container.Healthy)
		}, 2*time.Minute, 250*time.Millisecond, "%s turns healthy", ctr.GetContainerID()[:12])
		require.True(c.t, s.Running, "%s stopped (exit code %d):\n%s", ctr.GetContainerID()[:12], s.ExitCode, c.logs(ctr, "50"))
	}
}

// restartDaprd kills the replica's daprd and starts it again, as the pod does when a component
// container restarts (daprd never re-initialises a restarted component), and waits until it runs.
func (r *replica) restartDaprd() {
	r.c.t.Helper()
	r.c.kill(r.daprd)
	r.c.start(r.daprd)
	r.waitDaprd()
}

// resources are the replica's component resources, those `make run` writes (cmd/mqdapr-run):
// the replica's name is both components' stable clientID; the credentials are chainUser's, the
// password read from a file of the component's container.
func resources(name string) (pubsub, state string) {
	pubsub = fmt.Sprintf(`apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: mqtt
spec:
  type: pubsub.mqttv5
  version: v1
  metadata:
    - name: url
      value: %q
    - name: clientID
      value: %s
    - name: username
      value: `+chainUser+`
    - name: passwordFile
      value: `+clientPassword+`
    - name: deadLetterTopic
      value: connector/dead-letter
    - name: noMatchingSubscribers
      value: fail
`, brokerURL, name)
	state = fmt.Sprintf(`apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: kv
spec:
  type: state.mqttkv
  version: v1
  metadata:
    - name: url
      value: %q
    - name: clientID
      value: %s
    - name: username
      value: `+chainUser+`
    - name: passwordFile
      value: `+clientPassword+`
`, brokerURL, name)
	return pubsub, state
}

// publisher is a devicesim container on the chain's network, publishing count readings at rate
// per second over four devices, with sequence numbers from seqStart.
type publisher struct {
	ctr   *testcontainers.DockerContainer
	count int
	c     *chain
}

// publish starts devicesim; it runs to its -count and exits.
func (c *chain) publish(clientID string, count int, rate float64, seqStart int64) *publisher {
	c.t.Helper()
	ctr := c.run(clientID, c.images["devicesim"], network.WithNetwork(nil, c.net),
		testcontainers.WithCmd("-broker", brokerURL, "-client-id", clientID, "-username", devicesUser, "-password-file", clientPassword,
			"-count", fmt.Sprint(count), "-rate", fmt.Sprint(rate), "-devices", "4", "-assets", "2", "-seq-start", fmt.Sprint(seqStart)),
		c.auth.secret(devicesUser))
	return &publisher{ctr: ctr, count: count, c: c}
}

// wait waits until devicesim has exited and checks that it succeeded and that the broker
// acknowledged every reading (its summary line).
func (p *publisher) wait() {
	t := p.c.t
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	require.Eventually(t, func() bool {
		s, err := p.ctr.State(ctx)
		return err == nil && s.Status == "exited"
	}, 3*time.Minute, 250*time.Millisecond, "devicesim finishes")
	s, err := p.ctr.State(ctx)
	require.NoError(t, err)
	out := p.c.logs(p.ctr, "all")
	require.Equal(t, 0, s.ExitCode, "devicesim failed:\n%s", out)
	require.Contains(t, out, fmt.Sprintf(" %d telemetry messages acked (0 invalid on purpose), 0 failed", p.count))
}

// lakeRows reads the lake out of the app container (docker cp of its lake folder, the shared
// volume): the number of rows by reading id, and of rows by replica. A line without its newline
// (torn by a crash) is not a row, as for the app's own readers.
func (c *chain) lakeRows(app *testcontainers.DockerContainer) (byID, byReplica map[string]int) {
	c.t.Helper()
	byID, byReplica, err := c.readLake(app)
	require.NoError(c.t, err)
	return byID, byReplica
}

// readLake is lakeRows returning its error, for use inside a poll.
func (c *chain) readLake(app *testcontainers.DockerContainer) (byID, byReplica map[string]int, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := c.cli.CopyFromContainer(ctx, app.GetContainerID(), client.CopyFromContainerOptions{SourcePath: lakeDir})
	if err != nil {
		return nil, nil, fmt.Errorf("copying the lake out of the app container: %w", err)
	}
	defer res.Content.Close()
	byID, byReplica = map[string]int{}, map[string]int{}
	tr := tar.NewReader(res.Content)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return byID, byReplica, nil
		}
		if err != nil {
			return nil, nil, fmt.Errorf("reading the lake's archive: %w", err)
		}
		if h.Typeflag != tar.TypeReg || !partFile.MatchString(path.Base(h.Name)) {
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			return nil, nil, fmt.Errorf("reading %s from the lake's archive: %w", h.Name, err)
		}
		lines := bytes.Split(b, []byte("\n"))
		for _, line := range lines[:len(lines)-1] { // the last piece has no newline
			var row struct {
				ID      string `json:"id"`
				Replica string `json:"replica"`
			}
			if json.Unmarshal(line, &row) == nil && row.ID != "" {
				byID[row.ID]++
				byReplica[row.Replica]++
			}
		}
	}
}

// partFile is the name of a lake file (app/lake: part-<replica>.jsonl).
var partFile = regexp.MustCompile(`^part-.+\.jsonl$`)

// rowCount is the number of rows in the lake.
func (c *chain) rowCount(app *testcontainers.DockerContainer) int {
	c.t.Helper()
	n, err := c.countRows(app)
	require.NoError(c.t, err)
	return n
}

// countRows is rowCount returning its error, for use inside a poll.
func (c *chain) countRows(app *testcontainers.DockerContainer) (int, error) {
	byID, _, err := c.readLake(app)
	n := 0
	for _, k := range byID {
		n += k
	}
	return n, err
}

// waitRows waits until the lake holds at least n rows, and returns the count it saw.
func (c *chain) waitRows(app *testcontainers.DockerContainer, n int, timeout time.Duration, what string) int {
	c.t.Helper()
	var got int
	require.EventuallyWithT(c.t, func(ct *assert.CollectT) {
		var err error
		got, err = c.countRows(app)
		require.NoError(ct, err)
		require.GreaterOrEqual(ct, got, n, "rows in the lake")
	}, timeout, 250*time.Millisecond, "%s: at least %d rows in the lake", what, n)
	return got
}

// assertExactlyOnce waits until the lake holds n rows and checks that they are n readings,
// each once; it returns the rows by replica.
func (c *chain) assertExactlyOnce(app *testcontainers.DockerContainer, n int, timeout time.Duration) map[string]int {
	c.t.Helper()
	c.waitRows(app, n, timeout, "every reading")
	byID, byReplica := c.lakeRows(app)
	require.Len(c.t, byID, n, "distinct readings in the lake")
	for id, k := range byID {
		require.Equal(c.t, 1, k, "reading %s has %d rows", id, k)
	}
	return byReplica
}
