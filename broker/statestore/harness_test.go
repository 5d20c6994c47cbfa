package statestore

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
)

// t0 is the wall clock of the protocol's examples
// (docs/state-store-protocol.md#byte-level-examples: 001696374425000).
const t0 = 1696374425000

const (
	storeNode = "store-node"
	respTopic = "clients/app1/services/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke/response"
)

// corr is a 16-byte UUID, as the SDKs send (docs/state-store-protocol.md#mqtt-properties).
var corr = []byte{0x01, 0x91, 0xf3, 0xab, 0x12, 0x34, 0x70, 0x00, 0x80, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x01}

// fakeWall is the injectable wall clock; tests move it explicitly.
type fakeWall struct {
	mu sync.Mutex // guards t
	t  time.Time
}

func (f *fakeWall) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.t
}

func (f *fakeWall) SetMs(ms int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t = time.UnixMilli(ms)
}

func (f *fakeWall) AddMs(ms int64) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.t = f.t.Add(time.Duration(ms) * time.Millisecond)
}

type harness struct {
	t    *testing.T
	e    *Engine
	wall *fakeWall
	opts Options
}

// newHarness returns an engine at wall clock t0 with node ID storeNode and no limits, after
// applying mutate to its options.
func newHarness(t *testing.T, mutate func(*Options)) *harness {
	t.Helper()
	wall := &fakeWall{}
	wall.SetMs(t0)
	opts := NewDefaultOptions()
	opts.NodeID = storeNode
	opts.Now = wall.Now
	opts.MaxKeys, opts.MaxKeyBytes, opts.MaxValueBytes, opts.MaxWatches = 0, 0, 0, 0
	if mutate != nil {
		mutate(&opts)
	}
	e, err := NewEngine(opts)
	if err != nil {
		t.Fatalf("NewEngine: %v", err)
	}
	if err := e.Load(context.Background()); err != nil {
		t.Fatalf("Load: %v", err)
	}
	t.Cleanup(func() { _ = e.Close() })
	return &harness{t: t, e: e, wall: wall, opts: opts}
}

// ts formats an HLC as the SDKs do.
func ts(ms int64, counter int, node string) string {
	return fmt.Sprintf("%015d:%05d:%s", ms, counter, node)
}

// req builds a valid request (QoS 1, response topic, correlation data, __protVer) with payload and
// extra user properties given as "key=value".
func req(clientID, payload string, props ...string) Request {
	user := []UserProperty{{PropProtocolVersion, "1.0"}}
	for _, p := range props {
		k, v, _ := strings.Cut(p, "=")
		user = append(user, UserProperty{k, v})
	}
	return Request{
		ClientID: clientID,
		Topic:    RequestTopic,
		QoS:      1,
		Payload:  []byte(payload),
		Properties: Properties{
			ResponseTopic:   respTopic,
			CorrelationData: corr,
			ContentType:     ContentType,
			User:            user,
		},
	}
}

// do sends a request from client "app1" and fails the test on a Handle error.
func (h *harness) do(payload string, props ...string) Result {
	h.t.Helper()
	return h.doAs("app1", payload, props...)
}

func (h *harness) doAs(clientID, payload string, props ...string) Result {
	h.t.Helper()
	res, err := h.e.Handle(context.Background(), req(clientID, payload, props...))
	if err != nil {
		h.t.Fatalf("Handle(%q): %v", payload, err)
	}
	return res
}

// nowTS is a __ts property equal to the harness's wall clock, counter 0, node "app1-node".
func (h *harness) nowTS() string {
	return PropTimestamp + "=" + ts(h.wall.Now().UnixMilli(), 0, "app1-node")
}

// set runs `SET key value` plus options and returns the version, failing unless the answer is +OK.
func (h *harness) set(key, value string, extra ...string) string {
	h.t.Helper()
	elems := append([]string{"SET", key, value}, extra...)
	res := h.do(array(elems...), h.nowTS())
	checkPayload(h.t, res, "+OK\r\n")
	v, ok := res.Response.Properties.Get(PropTimestamp)
	if !ok {
		h.t.Fatalf("SET %s: no __ts", key)
	}
	return v
}

// array encodes a request array by hand, independently of package resp3.
func array(elems ...string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(elems))
	for _, e := range elems {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(e), e)
	}
	return b.String()
}

func checkPayload(t *testing.T, res Result, want string) {
	t.Helper()
	if got := string(res.Response.Payload); got != want {
		t.Fatalf("response payload = %q, want %q (properties %v)", got, want, res.Response.Properties.User)
	}
}

// checkResponse checks the whole response: payload, topic, QoS, correlation data, content type and
// exactly the user properties __stat=200, __protVer=1.0 and, when wantTS is not "", __ts=wantTS.
func checkResponse(t *testing.T, res Result, wantPayload, wantTS string) {
	t.Helper()
	checkPayload(t, res, wantPayload)
	m := res.Response
	if m.Topic != respTopic || m.QoS != 1 || string(m.Properties.CorrelationData) != string(corr) ||
		m.Properties.ContentType != ContentType || m.Properties.ResponseTopic != "" {
		t.Errorf("response envelope = topic %q QoS %d corr %x ct %q rt %q", m.Topic, m.QoS,
			m.Properties.CorrelationData, m.Properties.ContentType, m.Properties.ResponseTopic)
	}
	want := []UserProperty{{PropStatus, "200"}, {PropProtocolVersion, "1.0"}}
	if wantTS != "" {
		want = append(want, UserProperty{PropTimestamp, wantTS})
	}
	if fmt.Sprint(m.Properties.User) != fmt.Sprint(want) {
		t.Errorf("user properties = %v, want %v", m.Properties.User, want)
	}
}

// checkNotification checks one notification message.
func checkNotification(t *testing.T, m Message, clientID, key, wantPayload, wantTS string) {
	t.Helper()
	wantTopic := NotifyTopic(clientID, []byte(key))
	want := []UserProperty{{PropTimestamp, wantTS}, {PropProtocolVersion, "1.0"}}
	if m.Topic != wantTopic || m.QoS != 1 || string(m.Payload) != wantPayload ||
		m.Properties.ContentType != ContentType || fmt.Sprint(m.Properties.User) != fmt.Sprint(want) ||
		m.Properties.CorrelationData != nil {
		t.Errorf("notification = %+v\nwant topic %q payload %q props %v", m, wantTopic, wantPayload, want)
	}
}
