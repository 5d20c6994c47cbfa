package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

// The mqbroker process with -ws-addr and -wss-addr (MQTT over WebSocket, plain and over TLS with a
// test CA's certificate): it prints the WebSocket URLs, and a WebSocket publisher reaches a TCP
// subscriber, a TCP publisher a WebSocket-over-TLS subscriber (autopaho as the WebSocket client).
func TestWebSocketProcess(t *testing.T) {
	files := testutil.GenerateTLS(t, "mqbroker-ws")
	cmd := exec.Command(os.Args[0], "-addr", "127.0.0.1:0", "-tls-addr", "", "-ws-addr", "127.0.0.1:0",
		"-wss-addr", "127.0.0.1:0", "-tls-cert", files.Cert, "-tls-key", files.Key, "-log-level", "error")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { testutil.Stop(cmd.Process, exited, syscall.SIGKILL, 0) })

	br := bufio.NewReader(out)
	line, err := br.ReadString('\n') // "listening [tcp ws wss]"
	require.NoError(t, err)
	addrs := strings.Fields(strings.Trim(strings.TrimPrefix(strings.TrimSpace(line), "listening "), "[]"))
	require.Len(t, addrs, 3, line)
	line, err = br.ReadString('\n') // "websocket [ws://… wss://…]"
	require.NoError(t, err)
	urls := strings.Fields(strings.Trim(strings.TrimPrefix(strings.TrimSpace(line), "websocket "), "[]"))
	require.Len(t, urls, 2, line)
	require.True(t, strings.HasPrefix(urls[0], "ws://127.0.0.1:"), line)
	require.True(t, strings.HasPrefix(urls[1], "wss://127.0.0.1:"), line)

	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(files.CAPEM))
	tlsc := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	tcpSub, tcpMsgs := wsConnect(t, "mqtt://"+addrs[0], nil, "tcp-sub")
	wssSub, wssMsgs := wsConnect(t, urls[1]+"/mqtt", tlsc, "wss-sub")
	wsPub, _ := wsConnect(t, urls[0]+"/mqtt", nil, "ws-pub")
	tcpPub, _ := wsConnect(t, "mqtt://"+addrs[0], nil, "tcp-pub")
	wsSubscribe(t, tcpSub, "to-tcp")
	wsSubscribe(t, wssSub, "to-wss")

	_, err = wsPub.Publish(wsCtx(t), &paho.Publish{Topic: "to-tcp", QoS: 1, Payload: []byte("from ws")})
	require.NoError(t, err)
	require.Equal(t, "from ws", string(wsNext(t, tcpMsgs).Payload))
	_, err = tcpPub.Publish(wsCtx(t), &paho.Publish{Topic: "to-wss", QoS: 1, Payload: []byte("from tcp")})
	require.NoError(t, err)
	require.Equal(t, "from tcp", string(wsNext(t, wssMsgs).Payload))
}

// -wss-addr without a certificate is refused, naming the flags it needs.
func TestWebSocketFlags(t *testing.T) {
	err := run([]string{"-addr", "", "-wss-addr", "127.0.0.1:0"})
	require.ErrorContains(t, err, "-wss-addr")
	require.ErrorContains(t, err, "-tls-cert and -tls-key")

	cfg, err := parseConfig([]string{"-ws-addr", "0.0.0.0:8080", "-wss-addr", "0.0.0.0:8443"})
	require.NoError(t, err)
	require.Equal(t, "0.0.0.0:8080", cfg.WSAddr)
	require.Equal(t, "0.0.0.0:8443", cfg.WSSAddr)
	cfg, err = parseConfig(nil)
	require.NoError(t, err)
	require.Empty(t, cfg.WSAddr) // WebSocket listeners are off by default
	require.Empty(t, cfg.WSSAddr)
}

func wsCtx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return c
}

func wsConnect(t *testing.T, u string, tlsc *tls.Config, id string) (*autopaho.ConnectionManager, chan *paho.Publish) {
	t.Helper()
	pu, err := url.Parse(u)
	require.NoError(t, err)
	msgs := make(chan *paho.Publish, 10)
	cm, err := autopaho.NewConnection(wsCtx(t), autopaho.ClientConfig{
		ServerUrls: []*url.URL{pu}, TlsCfg: tlsc, KeepAlive: 30, CleanStartOnInitialConnection: true,
		ConnectTimeout: 10 * time.Second,
		ClientConfig: paho.ClientConfig{ClientID: id, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
			func(pr paho.PublishReceived) (bool, error) { msgs <- pr.Packet; return true, nil },
		}},
	})
	require.NoError(t, err)
	t.Cleanup(func() { _ = cm.Disconnect(context.Background()); <-cm.Done() })
	require.NoError(t, cm.AwaitConnection(wsCtx(t)))
	return cm, msgs
}

func wsSubscribe(t *testing.T, cm *autopaho.ConnectionManager, filter string) {
	t.Helper()
	_, err := cm.Subscribe(wsCtx(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	require.NoError(t, err)
}

func wsNext(t *testing.T, msgs chan *paho.Publish) *paho.Publish {
	t.Helper()
	select {
	case p := <-msgs:
		return p
	case <-time.After(10 * time.Second):
		t.Fatal("no message received")
		return nil
	}
}
