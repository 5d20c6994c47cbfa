package devstack

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/broker/brokertest"
)

// publishQoS1 publishes one message and returns the PUBACK reason code.
func publishQoS1(t *testing.T, addr, topic, payload string) byte {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	c := paho.NewClient(paho.ClientConfig{Conn: conn})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err = c.Connect(ctx, &paho.Connect{ClientID: "publisher", CleanStart: true, KeepAlive: 30})
	require.NoError(t, err)
	defer c.Disconnect(&paho.Disconnect{})
	res, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte(payload),
		Properties: &paho.PublishProperties{User: paho.UserProperties{{Key: "mqdapr-error", Value: "why"}}}})
	if err != nil && res == nil {
		require.NoError(t, err)
	}
	return res.ReasonCode
}

func sinkLines(t *testing.T, file string) []map[string]any {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		return nil
	}
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &m))
		out = append(out, m)
	}
	return out
}

// The sink's persistent session makes a publish to a dead-letter topic be accepted (0x00, not
// 0x10 "no matching subscribers") and kept while the sink is down; each message lands in its file.
func TestSinkKeepsDeadLettersAcrossItsRestart(t *testing.T) {
	b := brokertest.Start(t)
	dir := t.TempDir()
	file, ready := filepath.Join(dir, "dl.jsonl"), filepath.Join(dir, "ready")
	require.Equal(t, byte(0x10), publishQoS1(t, b.Addr(), "connector/rejected", "before"), "no subscriber yet: 0x10")

	run := func() (stop func()) {
		ctx, cancel := context.WithCancel(t.Context())
		done := make(chan error, 1)
		go func() {
			done <- RunSink(ctx, SinkOptions{BrokerURL: b.URL(false), ClientID: "t", Topics: []string{"connector/rejected", "connector/dead-letter"},
				File: file, Ready: ready, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
		}()
		require.NoError(t, WaitFile(ready)(ctxWithTimeout(t, 20*time.Second)))
		return func() { cancel(); require.NoError(t, <-done) }
	}
	stop := run()
	assert.Equal(t, byte(0), publishQoS1(t, b.Addr(), "connector/rejected", "one"))
	require.Eventually(t, func() bool { return len(sinkLines(t, file)) == 1 }, 10*time.Second, 10*time.Millisecond)
	stop()

	assert.Equal(t, byte(0), publishQoS1(t, b.Addr(), "connector/dead-letter", "two"), "the session subscribes while the sink is down")
	stop = run()
	require.Eventually(t, func() bool { return len(sinkLines(t, file)) == 2 }, 10*time.Second, 10*time.Millisecond)
	stop()
	lines := sinkLines(t, file)
	assert.Equal(t, "connector/rejected", lines[0]["topic"])
	assert.Equal(t, "one", lines[0]["payload"])
	assert.Equal(t, "connector/dead-letter", lines[1]["topic"])
	assert.Equal(t, "two", lines[1]["payload"])
	assert.Equal(t, map[string]any{"mqdapr-error": "why"}, lines[1]["properties"])
}

func ctxWithTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), d)
	t.Cleanup(cancel)
	return ctx
}
