package broker

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"
)

// Real 3.1.1 clients against the broker: paho.mqtt.golang (the client of Dapr's pubsub.mqtt3) and
// Mosquitto's command-line clients with -V mqttv311.

// v3Client connects a paho.mqtt.golang client (protocol level 4) to addr; messages on any topic,
// subscribed now or resumed with the session, arrive on the returned channel.
func v3Client(t testing.TB, addr, id string, clean bool) (mqtt.Client, chan mqtt.Message, bool) {
	t.Helper()
	msgs := make(chan mqtt.Message, 100)
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(id).SetProtocolVersion(4).
		SetCleanSession(clean).SetAutoReconnect(false).SetOrderMatters(true).
		SetDefaultPublishHandler(func(_ mqtt.Client, m mqtt.Message) { msgs <- m })
	c := mqtt.NewClient(o)
	tok := c.Connect()
	require.True(t, tok.WaitTimeout(waitFor), "connect timed out")
	require.NoError(t, tok.Error())
	t.Cleanup(func() {
		if c.IsConnected() {
			c.Disconnect(100)
		}
	})
	return c, msgs, tok.(*mqtt.ConnectToken).SessionPresent()
}

func v3WaitToken(t testing.TB, tok mqtt.Token) {
	t.Helper()
	require.True(t, tok.WaitTimeout(waitFor), "timed out")
	require.NoError(t, tok.Error())
}

func nextV3(t testing.TB, msgs chan mqtt.Message) mqtt.Message {
	t.Helper()
	select {
	case m := <-msgs:
		return m
	case <-time.After(waitFor):
		t.Fatal("no message received")
		return nil
	}
}

// paho.mqtt.golang at QoS 0, 1 and 2 both ways with a v5 client, then a persistent session (clean
// session 0) across a broker restart on a data directory: the messages queued while it was away
// are all delivered [MQTT-3.1.2-4] [MQTT-4.1.0-1].
func TestV3PahoMQTTGolang(t *testing.T) {
	dir := t.TempDir()
	b := startDurable(t, dir)
	addr := b.Addrs()[0]
	v5, err := tryClient(t, addr, "v5", withExpiry(3600))
	require.NoError(t, err)
	v5.subscribe(t, "tele/#", 2)
	dev, devMsgs, present := v3Client(t, addr, "device", false)
	require.False(t, present)
	v3WaitToken(t, dev.Subscribe("cmd/#", 1, nil))

	for qos := range byte(3) {
		v3WaitToken(t, dev.Publish("tele/x", qos, false, fmt.Sprint("t", qos)))
		m := v5.next(t)
		require.Equal(t, fmt.Sprint("t", qos), string(m.Payload))
		require.Equal(t, qos, m.QoS)
	}
	v5.publish(t, "cmd/a", 1, "do")
	m := nextV3(t, devMsgs)
	require.Equal(t, "cmd/a", m.Topic())
	require.Equal(t, "do", string(m.Payload()))
	require.Equal(t, byte(1), m.Qos())

	dev.Disconnect(250)
	waitOffline(t, b, "device")
	for i := range 3 {
		v5.publish(t, "cmd/a", 1, fmt.Sprint("queued", i))
	}
	require.NoError(t, v5.Disconnect(&paho.Disconnect{}))
	require.NoError(t, b.Close())

	b2 := startDurable(t, dir)
	defer func() { require.NoError(t, b2.Close()) }()
	_, devMsgs2, present := v3Client(t, b2.Addrs()[0], "device", false)
	require.True(t, present, "session present after the restart [MQTT-3.2.2-2]")
	for i := range 3 {
		m := nextV3(t, devMsgs2)
		require.Equal(t, fmt.Sprint("queued", i), string(m.Payload()))
	}
}

// mosquittoClient finds a Mosquitto command-line client, skipped when missing outside CI like
// Mosquitto itself (internal/testutil.MosquittoPath).
func mosquittoClient(t testing.TB, name string) string {
	t.Helper()
	if p, err := exec.LookPath(name); err == nil {
		return p
	}
	if os.Getenv("CI") != "" {
		t.Fatalf("%s not found; scripts/install-test-deps.sh installs mosquitto-clients (make test runs it)", name)
	}
	t.Skipf("%s not found: run scripts/install-test-deps.sh (or `make test`) to enable this test", name)
	return ""
}

// hasSub reports whether client id's session has filter.
func v3HasSub(b *Broker, id, filter string) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.sessions[id]
	return s != nil && s.subs[filter] != nil
}

// mosquitto_pub and mosquitto_sub with -V mqttv311: a retained QoS 1 message reaches a later
// subscriber [MQTT-3.3.1-6], then a QoS 2 message a live one.
func TestV3MosquittoClients(t *testing.T) {
	pub, sub := mosquittoClient(t, "mosquitto_pub"), mosquittoClient(t, "mosquitto_sub")
	b := newBroker(t, nil)
	host, port := v3SplitAddr(t, b.Addrs()[0])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run := func(args ...string) {
		t.Helper()
		out, err := exec.CommandContext(ctx, pub, append([]string{"-V", "mqttv311", "-h", host, "-p", port}, args...)...).CombinedOutput()
		require.NoError(t, err, "mosquitto_pub %v: %s", args, out)
	}
	run("-i", "p1", "-q", "1", "-r", "-t", "m/ret", "-m", "kept")

	var out bytes.Buffer
	cmd := exec.CommandContext(ctx, sub, "-V", "mqttv311", "-h", host, "-p", port, "-i", "s1", "-q", "2", "-t", "m/#", "-v", "-C", "2", "-W", "25")
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	require.Eventually(t, func() bool { return v3HasSub(b, "s1", "m/#") }, waitFor, 5*time.Millisecond)
	run("-i", "p2", "-q", "2", "-t", "m/live", "-m", "hello")
	require.NoError(t, cmd.Wait(), "mosquitto_sub: %s", out.String())
	require.Equal(t, []string{"m/ret kept", "m/live hello"}, strings.Split(strings.TrimSpace(out.String()), "\n"))
}

func v3SplitAddr(t testing.TB, addr string) (string, string) {
	t.Helper()
	i := strings.LastIndex(addr, ":")
	require.Positive(t, i)
	return addr[:i], addr[i+1:]
}
