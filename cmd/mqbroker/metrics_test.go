package main

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/statestore"
	"github.com/mqdapr/mqdapr/internal/hlc"
	"github.com/mqdapr/mqdapr/internal/resp3"
	"github.com/mqdapr/mqdapr/internal/testutil"
)

// rawClient is one MQTT v5 connection driven packet by packet.
type rawClient struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
}

func rawConnect(t *testing.T, addr, id string, expiry uint32) *rawClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { nc.Close() })
	_ = nc.SetDeadline(time.Now().Add(20 * time.Second))
	c := &rawClient{t: t, nc: nc, br: bufio.NewReader(nc)}
	cp := packets.NewControlPacket(packets.CONNECT)
	cc := cp.Content.(*packets.Connect)
	cc.ClientID, cc.CleanStart = id, true
	if expiry > 0 {
		cc.Properties = &packets.Properties{SessionExpiryInterval: &expiry}
	}
	c.write(cp)
	require.Equal(t, byte(0), c.read().Content.(*packets.Connack).ReasonCode)
	return c
}

func (c *rawClient) write(cp interface {
	WriteTo(io.Writer) (int64, error)
}) {
	_, err := cp.WriteTo(c.nc)
	require.NoError(c.t, err)
}

func (c *rawClient) read() *packets.ControlPacket {
	cp, err := packets.ReadPacket(c.br)
	require.NoError(c.t, err)
	return cp
}

func (c *rawClient) subscribe(id uint16, filters ...string) []byte {
	sub := packets.NewControlPacket(packets.SUBSCRIBE)
	s := sub.Content.(*packets.Subscribe)
	s.PacketID = id
	for _, f := range filters {
		s.Subscriptions = append(s.Subscriptions, packets.SubOptions{Topic: f, QoS: 1})
	}
	c.write(sub)
	return c.read().Content.(*packets.Suback).Reasons
}

// kv sends one state store request and returns the response's payload (the PUBACK and the
// response PUBLISH may come in either order).
func (c *rawClient) kv(id uint16, args ...string) resp3.Value {
	elems := make([][]byte, len(args))
	for i, a := range args {
		elems[i] = []byte(a)
	}
	c.write(&packets.Publish{Topic: statestore.RequestTopic, QoS: 1, PacketID: id, Payload: resp3.EncodeArray(elems...),
		Properties: &packets.Properties{ResponseTopic: "resp/m", CorrelationData: []byte{byte(id)},
			User: []packets.User{{Key: statestore.PropTimestamp, Value: hlc.HLC{WallMs: uint64(time.Now().UnixMilli()), NodeID: "test"}.String()}}}})
	var res *packets.Publish
	acked := false
	for res == nil || !acked {
		cp := c.read()
		switch p := cp.Content.(type) {
		case *packets.Puback:
			require.Equal(c.t, id, p.PacketID)
			acked = true
		case *packets.Publish:
			res = p
			c.write(&packets.Puback{PacketID: p.PacketID, Properties: &packets.Properties{}})
		}
	}
	v, err := resp3.DecodeResponse(res.Payload)
	require.NoError(c.t, err)
	return v
}

// startBrokerProcess runs mqbroker (the test binary as main) with args and returns its MQTT address
// and its metrics URL (the lines it prints).
func startBrokerProcess(t *testing.T, args ...string) (addr, metricsURL string) {
	p := runBrokerProcess(t, nil, args...)
	return p.addr, p.metricsURL
}

// brokerProcess is an mqbroker process of runBrokerProcess.
type brokerProcess struct {
	addr, metricsURL string
	// stop ends the process with SIGTERM (up to 10 s, then SIGKILL) and waits for it.
	stop func()
}

// runBrokerProcess runs mqbroker (the test binary as main) listening on loopback with metrics,
// then args (a flag given again there wins), its stderr to stderr (nil: discarded); the process
// is killed at the end of the test.
func runBrokerProcess(t *testing.T, stderr io.Writer, args ...string) *brokerProcess {
	t.Helper()
	cmd := exec.Command(os.Args[0], append([]string{"-addr", "127.0.0.1:0", "-tls-addr", "", "-log-level", "error", "-metrics-addr", "127.0.0.1:0"}, args...)...)
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.Stderr = stderr
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	t.Cleanup(func() { testutil.Stop(cmd.Process, exited, syscall.SIGKILL, 0) })
	r := bufio.NewReader(out)
	line, err := r.ReadString('\n') // "listening [127.0.0.1:port]"
	require.NoError(t, err)
	p := &brokerProcess{addr: strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(line), "listening ["), "]"),
		stop: func() { testutil.Stop(cmd.Process, exited, syscall.SIGTERM, 10*time.Second) }}
	line, err = r.ReadString('\n') // "metrics http://127.0.0.1:port/metrics"
	require.NoError(t, err)
	var ok bool
	p.metricsURL, ok = strings.CutPrefix(strings.TrimSpace(line), "metrics ")
	require.True(t, ok, line)
	return p
}

// /metrics of the mqbroker process, parsed by the Prometheus text parser, moves with real traffic:
// connections by protocol and transport, sessions, messages in and out by QoS, a refused
// subscription by reason code, store commits with their latency histogram, key-value requests by
// command and result.
func TestMetricsProcess(t *testing.T) {
	addr, url := startBrokerProcess(t, "-data-dir", filepath.Join(t.TempDir(), "data"), "-deny-subscribe", "secret/#")
	m := rawConnect(t, addr, "m", 0)
	s := rawConnect(t, addr, "s", 60) // a persistent session: its messages go through the store

	require.Equal(t, []byte{1, 0x87}, s.subscribe(1, "data/#", "secret/x"))
	require.Equal(t, []byte{1}, m.subscribe(1, "resp/m"))
	before := testutil.Scrape(t, url)
	require.EqualValues(t, 2, before.Value("mqdapr_broker_connections", "protocol", "5", "transport", "tcp"))
	require.EqualValues(t, 0, before.Value("mqdapr_broker_connections", "protocol", "3.1.1", "transport", "tcp"))
	require.EqualValues(t, 2, before.Value("mqdapr_broker_sessions"))
	require.EqualValues(t, 1, before.Value("mqdapr_broker_refused_total", "code", "0x87", "reason", "not_authorized"))

	for i := range 10 {
		m.write(&packets.Publish{Topic: "data/x", QoS: 1, PacketID: uint16(100 + i), Payload: []byte("p"), Properties: &packets.Properties{}})
		require.Equal(t, byte(0), m.read().Content.(*packets.Puback).ReasonCode)
	}
	for range 10 { // each sent (counted out) before it is read here
		p := s.read().Content.(*packets.Publish)
		require.Equal(t, "data/x", p.Topic)
		s.write(&packets.Puback{PacketID: p.PacketID, Properties: &packets.Properties{}})
	}
	m.write(&packets.Publish{Topic: "data/y", QoS: 0, Payload: []byte("q"), Properties: &packets.Properties{}})
	require.Equal(t, "data/y", s.read().Content.(*packets.Publish).Topic)
	after := testutil.Scrape(t, url)
	delta := func(name string, labels ...string) float64 {
		return after.Value(name, labels...) - before.Value(name, labels...)
	}
	require.EqualValues(t, 10, delta("mqdapr_broker_messages_in_total", "qos", "1"))
	require.EqualValues(t, 1, delta("mqdapr_broker_messages_in_total", "qos", "0"))
	require.EqualValues(t, 10, delta("mqdapr_broker_messages_out_total", "qos", "1"))
	require.EqualValues(t, 1, delta("mqdapr_broker_messages_out_total", "qos", "0"))
	require.EqualValues(t, 0, delta("mqdapr_broker_messages_in_total", "qos", "2"))
	require.GreaterOrEqual(t, delta("mqdapr_broker_packets_in_total"), 21.0, "10 PUBLISH, 10 PUBACK, 1 PUBLISH")
	// The persistent session's messages were stored (and their deletions on PUBACK): every commit
	// is one observation of the latency histogram.
	commits := delta("mqdapr_broker_store_commits_total")
	require.GreaterOrEqual(t, commits, 1.0)
	require.GreaterOrEqual(t, delta("mqdapr_broker_store_ops_total"), 10.0)
	h := after.Histogram(t, "mqdapr_broker_store_commit_duration_seconds")
	require.Equal(t, after.Value("mqdapr_broker_store_commits_total"), float64(h.GetSampleCount()))
	require.Greater(t, h.GetSampleSum(), 0.0)
	require.Len(t, h.GetBucket(), len(broker.CommitBuckets)+1, "the buckets and +Inf")

	// Key-value requests by command and result.
	require.Equal(t, "OK", string(m.kv(1, "SET", "k", "v").Str))
	require.Equal(t, "v", string(m.kv(2, "GET", "k").Str))
	require.Equal(t, resp3.KindNullBulk, m.kv(3, "GET", "nope").Kind)
	require.Equal(t, resp3.KindError, m.kv(4, "SET", "k").Kind) // wrong number of arguments
	kv := testutil.Scrape(t, url)
	kvDelta := func(cmd, result string) float64 {
		l := []string{"command", cmd, "result", result}
		return kv.Value("mqdapr_broker_kv_ops_total", l...) - after.Value("mqdapr_broker_kv_ops_total", l...)
	}
	require.True(t, after.Has("mqdapr_broker_kv_ops_total", "command", "DEL", "result", "ok"), "every pair exists from the start")
	require.EqualValues(t, 1, kvDelta("SET", "ok"))
	require.EqualValues(t, 1, kvDelta("GET", "ok"))
	require.EqualValues(t, 1, kvDelta("GET", "not_found"))
	require.EqualValues(t, 1, kvDelta("SET", "error"))
	require.EqualValues(t, 1, kv.Value("mqdapr_broker_kv_keys"))
	require.True(t, kv.Has("go_goroutines"), "the Go runtime collector")
	require.True(t, kv.Has("process_resident_memory_bytes"), "the process collector")
}

// /healthz is live from the start; /readyz answers 503 until the broker serves (store restored,
// listeners up), 200 while it serves and 503 again once it shuts down.
func TestReadiness(t *testing.T) {
	ops, err := startOps("127.0.0.1:0", slog.New(slog.DiscardHandler))
	require.NoError(t, err)
	t.Cleanup(ops.close)
	ops.out = io.Discard
	base := "http://" + ops.addr.String()
	get := func(path string) (int, string) {
		resp, err := http.Get(base + path)
		require.NoError(t, err)
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, strings.TrimSpace(string(body))
	}
	code, body := get("/healthz")
	require.Equal(t, 200, code, body)
	code, body = get("/readyz")
	require.Equal(t, 503, code)
	require.Contains(t, body, "starting")
	code, _ = get("/metrics")
	require.Equal(t, 200, code, "the runtime metrics are served before the broker starts")

	o := broker.NewDefaultOptions()
	o.Addr, o.TLSAddr, o.Logger = "127.0.0.1:0", "", slog.New(slog.DiscardHandler)
	b, err := broker.New(o)
	require.NoError(t, err)
	require.NoError(t, b.Start())
	t.Cleanup(func() { _ = b.Close() })
	ops.ready(b, nil)
	code, body = get("/readyz")
	require.Equal(t, 200, code, body)
	require.True(t, testutil.Scrape(t, base+"/metrics").Has("mqdapr_broker_sessions"))

	ops.stopping()
	code, body = get("/readyz")
	require.Equal(t, 503, code)
	require.Contains(t, body, "shutting down")
	code, _ = get("/healthz")
	require.Equal(t, 200, code)
}
