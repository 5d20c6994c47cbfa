package containers

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/client"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"github.com/testcontainers/testcontainers-go"
	"github.com/testcontainers/testcontainers-go/wait"
)

// startBroker runs the mqbroker image with the named volume on its data directory, auth's password
// file and ACL (brokerCmd), and waits
// until Docker reports the image's HEALTHCHECK healthy. The container is removed at the end of the
// test; it returns the container and the host's address of its MQTT port.
func startBroker(t *testing.T, image, vol string, auth *brokerAuth) (*testcontainers.DockerContainer, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	c, err := testcontainers.Run(ctx, image,
		testcontainers.WithExposedPorts("1883/tcp"),
		testcontainers.WithMounts(testcontainers.VolumeMount(vol, "/var/lib/mqbroker")),
		testcontainers.WithCmd(brokerCmd()...), auth.brokerFiles(),
		testcontainers.WithWaitStrategy(wait.ForHealthCheck().WithStartupTimeout(90*time.Second)),
	)
	testcontainers.CleanupContainer(t, c)
	require.NoError(t, err)
	host, err := c.Host(ctx)
	require.NoError(t, err)
	port, err := c.MappedPort(ctx, "1883/tcp")
	require.NoError(t, err)
	return c, net.JoinHostPort(host, fmt.Sprint(port.Num()))
}

// mqttClient is a paho client whose received publishes go to msgs (acknowledged on return).
type mqttClient struct {
	*paho.Client
	msgs chan *paho.Publish
}

// connect opens an MQTT v5 session as id with user's credentials: cleanStart false resumes it; the
// session outlives the connection by an hour.
func connect(t *testing.T, addr, id, user, password string, cleanStart bool) (*mqttClient, *paho.Connack) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	require.NoError(t, err)
	c := &mqttClient{msgs: make(chan *paho.Publish, 10000)}
	c.Client = paho.NewClient(paho.ClientConfig{
		ClientID: id,
		Conn:     nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.msgs <- pr.Packet
			return true, nil
		}},
	})
	expiry := uint32(3600)
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: cleanStart,
		Username: user, UsernameFlag: user != "", Password: []byte(password), PasswordFlag: password != "",
		Properties: &paho.ConnectProperties{SessionExpiryInterval: &expiry}})
	require.NoError(t, err)
	require.Equal(t, byte(0), ca.ReasonCode)
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		nc.Close()
		<-c.Done()
	})
	return c, ca
}

// connackCode is the CONNACK reason code the broker answers a clean session with these credentials.
func connackCode(t *testing.T, addr, user, password string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	require.NoError(t, err)
	defer nc.Close()
	c := paho.NewClient(paho.ClientConfig{ClientID: "ctest-refused", Conn: nc})
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: "ctest-refused", KeepAlive: 30, CleanStart: true,
		Username: user, UsernameFlag: user != "", Password: []byte(password), PasswordFlag: password != ""})
	require.NotNil(t, ca, "no CONNACK: %v", err)
	if ca.ReasonCode == 0 {
		_ = c.Disconnect(&paho.Disconnect{})
	}
	return ca.ReasonCode
}

// healthLog is the output of the container's last HEALTHCHECK run.
func healthLog(t *testing.T, c *testcontainers.DockerContainer) (container.HealthStatus, string) {
	t.Helper()
	in, err := c.Inspect(context.Background())
	require.NoError(t, err)
	require.NotNil(t, in.State.Health, "the image declares no HEALTHCHECK")
	h := in.State.Health
	if len(h.Log) == 0 {
		return h.Status, ""
	}
	return h.Status, strings.TrimSpace(h.Log[len(h.Log)-1].Output)
}

// The broker image keeps QoS 1 messages queued for an offline persistent session through a
// `docker kill` of its container: a new container on the same named volume delivers every one,
// once, to the session resumed. The broker requires credentials (a password file and an ACL, as
// off loopback); both containers report healthy through the image's HEALTHCHECK (`mqbroker
// healthcheck`: GET /readyz inside the container), and the data directory, the image's 0700
// folder on a fresh volume, draws no warning.
func TestBrokerContainerKeepsMessagesAcrossKill(t *testing.T) {
	requireDocker(t)
	t.Parallel()
	const n = 200
	image := buildImages(t, "mqbroker")["mqbroker"]
	vol := volume(t)
	cli := dockerClient(t)
	auth := newBrokerAuth(t, "user ctest\ntopic readwrite ctest/#\n", "ctest")
	pw := auth.passwords["ctest"]

	first, addr := startBroker(t, image, vol, auth)
	status, out := healthLog(t, first)
	require.Equal(t, container.Healthy, status)
	require.Equal(t, "healthy: http://127.0.0.1:9883/readyz: HTTP 200", out)
	logs := containerLogs(t, first)
	require.NotContains(t, logs, "data directory is accessible")
	require.NotContains(t, logs, "authentication refused", "the health check makes no MQTT connection")
	// From the host, through the published port: no credentials, a wrong password, refused.
	assert.Equal(t, byte(0x87), connackCode(t, addr, "", ""), "an anonymous client")
	assert.Equal(t, byte(0x86), connackCode(t, addr, "ctest", "not-the-password"), "a wrong password")
	require.NotContains(t, containerLogs(t, first), "not-the-password")
	in, err := first.Inspect(context.Background())
	require.NoError(t, err)
	require.Equal(t, "65532:65532", in.Config.User)
	require.Equal(t, "test", in.Config.Labels["org.opencontainers.image.version"])

	// The subscriber's session, subscribed at QoS 1, then offline.
	sub, _ := connect(t, addr, "ctest-sub", "ctest", pw, true)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	_, err = sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "ctest/#", QoS: 1}}})
	require.NoError(t, err)
	require.NoError(t, sub.Disconnect(&paho.Disconnect{ReasonCode: 0}))
	<-sub.Done()

	// Every PUBACK is the broker's promise that the message is durable.
	pub, _ := connect(t, addr, "ctest-pub", "ctest", pw, true)
	for i := range n {
		r, err := pub.Publish(ctx, &paho.Publish{Topic: fmt.Sprintf("ctest/%d", i%10), QoS: 1, Payload: fmt.Appendf(nil, "%d", i)})
		require.NoError(t, err)
		require.Less(t, r.ReasonCode, byte(0x80), "PUBACK %d", i)
	}

	_, err = cli.ContainerKill(ctx, first.GetContainerID(), client.ContainerKillOptions{Signal: "KILL"})
	require.NoError(t, err)
	require.NoError(t, first.Terminate(ctx)) // the volume stays; a new container uses it

	second, addr := startBroker(t, image, vol, auth)
	status, out = healthLog(t, second)
	require.Equal(t, container.Healthy, status)
	require.Contains(t, out, "healthy: ")

	sub, ca := connect(t, addr, "ctest-sub", "ctest", pw, false)
	require.True(t, ca.SessionPresent, "the persistent session was lost")
	seen := make(map[string]int, n)
	for len(seen) < n {
		select {
		case m := <-sub.msgs:
			seen[string(m.Payload)]++
		case <-ctx.Done():
			t.Fatalf("%d of %d messages delivered after the restart", len(seen), n)
		}
	}
	for i := range n {
		require.Equal(t, 1, seen[fmt.Sprint(i)], "message %d", i)
	}
}
