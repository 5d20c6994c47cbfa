package healthcheck

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/mqdapr/mqdapr/broker"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func startBroker(t *testing.T, auth broker.Authenticator) *broker.Broker {
	t.Helper()
	o := broker.NewDefaultOptions()
	o.Addr = "127.0.0.1:0"
	o.TLSAddr = ""
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	o.Authenticator = auth
	b, err := broker.New(o)
	require.NoError(t, err)
	require.NoError(t, b.Start())
	t.Cleanup(func() { _ = b.Close() })
	return b
}

type refuseAll struct{ code byte }

func (r refuseAll) Authenticate(context.Context, *broker.AuthRequest) (broker.AuthResponse, error) {
	return broker.AuthResponse{}, &broker.ReasonError{Code: r.code, Reason: "test"}
}

func probe(t *testing.T, addr string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return MQTT(ctx, addr)
}

// The probe completes CONNECT/CONNACK with mqdapr's broker; a broker that refuses the probe for
// lack of credentials is serving, one that refuses it otherwise is not.
func TestMQTTRealBroker(t *testing.T) {
	what, err := probe(t, startBroker(t, nil).Addrs()[0])
	require.NoError(t, err)
	require.Contains(t, what, "accepted an MQTT v5 connection")

	what, err = probe(t, startBroker(t, refuseAll{0x87}).Addrs()[0])
	require.NoError(t, err)
	require.Contains(t, what, "CONNACK 0x87")

	_, err = probe(t, startBroker(t, refuseAll{0x88}).Addrs()[0])
	require.ErrorContains(t, err, "CONNACK reason 0x88")
}

// A stopped broker, a server that is not MQTT, and one that accepts but never answers are
// unhealthy, each with its reason.
func TestMQTTUnhealthy(t *testing.T) {
	b := startBroker(t, nil)
	addr := b.Addrs()[0]
	require.NoError(t, b.Close())
	_, err := probe(t, addr)
	require.ErrorContains(t, err, "refused")

	// Another service on the port: it greets first, as SSH does.
	other, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer other.Close()
	greeted := make(chan struct{})
	go func() {
		defer close(greeted)
		c, err := other.Accept()
		if err != nil {
			return
		}
		_, _ = io.WriteString(c, "SSH-2.0-OpenSSH_9.2\r\n")
		_ = c.Close()
	}()
	_, err = probe(t, other.Addr().String())
	require.ErrorContains(t, err, "not CONNACK")
	<-greeted

	silent, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer silent.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := silent.Accept()
		if err == nil {
			accepted <- c
		}
		close(accepted)
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err = MQTT(ctx, silent.Addr().String())
	require.ErrorContains(t, err, "no CONNACK")
	if c := <-accepted; c != nil {
		c.Close()
	}
}

func TestHTTP(t *testing.T) {
	ready := true
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		if !ready {
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok\n")
	}))
	defer srv.Close()
	ctx := context.Background()
	_, err := HTTP(ctx, srv.URL+"/healthz")
	require.NoError(t, err)
	ready = false
	_, err = HTTP(ctx, srv.URL+"/healthz")
	require.ErrorContains(t, err, "HTTP 503 shutting down")
}

func TestRunOneLine(t *testing.T) {
	var out bytes.Buffer
	require.Equal(t, 0, Run(&out, time.Second, func(context.Context) (string, error) { return "fine", nil }))
	require.Equal(t, "healthy: fine\n", out.String())
	out.Reset()
	require.Equal(t, 1, Run(&out, time.Second, func(context.Context) (string, error) { return "", errors.New("down") }))
	require.Equal(t, "unhealthy: down\n", out.String())
}

func TestLoopback(t *testing.T) {
	for in, want := range map[string]string{
		"0.0.0.0:1883":   "127.0.0.1:1883",
		":1883":          "127.0.0.1:1883",
		"[::]:1883":      "127.0.0.1:1883",
		"10.0.0.5:1883":  "10.0.0.5:1883",
		"broker:1883":    "broker:1883",
		"127.0.0.1:8081": "127.0.0.1:8081",
		"no-port":        "no-port",
	} {
		require.Equal(t, want, Loopback(in), in)
	}
}
