package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"

	"github.com/mqdapr/mqdapr/app/telemetry"
	"github.com/mqdapr/mqdapr/broker/brokertest"
)

type sent struct {
	topic   string
	payload []byte
	retain  bool
	props   map[string]string
}

type fakePub struct {
	mu   sync.Mutex
	msgs []sent
	fail func(n int) error
}

func (f *fakePub) Publish(_ context.Context, topic string, payload []byte, retain bool, props map[string]string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.fail != nil {
		if err := f.fail(len(f.msgs)); err != nil {
			return err
		}
	}
	f.msgs = append(f.msgs, sent{topic, payload, retain, props})
	return nil
}

var t0 = time.Date(2026, 11, 27, 8, 0, 0, 0, time.UTC)

func clock() func() time.Time {
	var mu sync.Mutex
	now := t0
	return func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		now = now.Add(10 * time.Millisecond)
		return now
	}
}

// TestPayloadsPassTheConnectorValidation parses every simulated payload with the connector's own
// validator: valid ones normalise, the invalid ones are rejected.
func TestPayloadsPassTheConnectorValidation(t *testing.T) {
	for _, messageID := range []bool{false, true} {
		pub := &fakePub{}
		cfg := simConfig{devices: 4, assets: 2, count: 40, topicPrefix: "devices", configPrefix: "config/assets",
			publishConfig: true, messageID: messageID, invalidEvery: 10, seqStart: 1000, seed: 7}
		s, err := simulate(context.Background(), cfg, pub, clock())
		if err != nil {
			t.Fatal(err)
		}
		if s.Configs != 2 || s.Published != 40 || s.Invalid != 4 || s.Failed != 0 {
			t.Fatalf("summary %+v", s)
		}
		v := &telemetry.Validator{Now: func() time.Time { return t0.Add(time.Hour) }, MaxFutureSkew: time.Minute}
		seqs := map[string][]int64{}
		for i, m := range pub.msgs {
			if i < 2 {
				var a asset
				if !m.retain || !strings.HasPrefix(m.topic, "config/assets/") || json.Unmarshal(m.payload, &a) != nil || len(a.Devices) != 2 {
					t.Fatalf("config message %d: %+v", i, m)
				}
				continue
			}
			device := strings.Split(m.topic, "/")[1]
			r, err := v.Parse(m.payload, device, m.props["message-id"])
			if (i-2+1)%10 == 0 {
				if !errors.Is(err, telemetry.ErrInvalid) {
					t.Fatalf("message %d should be invalid: %v", i, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("message %d (%s): %v", i, m.payload, err)
			}
			if r.Metrics["temperature"].Unit != "C" || r.Metrics["pressure"].Unit != "bar" {
				t.Fatalf("message %d: %+v", i, r.Metrics)
			}
			if !messageID {
				seqs[device] = append(seqs[device], r.Seq)
			}
		}
		for d, ss := range seqs {
			for i := 1; i < len(ss); i++ {
				if ss[i] <= ss[i-1] {
					t.Fatalf("device %s: sequence numbers %v not increasing", d, ss)
				}
			}
		}
	}
}

func TestFailedPublishIsCountedAndRunGoesOn(t *testing.T) {
	pub := &fakePub{}
	calls := 0
	pub2 := publisherFunc(func(ctx context.Context, topic string, payload []byte, retain bool, props map[string]string) error {
		calls++
		if calls == 3 {
			return errors.New("refused")
		}
		return pub.Publish(ctx, topic, payload, retain, props)
	})
	s, err := simulate(context.Background(), simConfig{devices: 2, assets: 1, count: 5, topicPrefix: "d", seqStart: 1}, pub2, clock())
	if err != nil || s.Published != 4 || s.Failed != 1 {
		t.Fatalf("summary %+v err %v", s, err)
	}
}

// TestInflightPublishesDevicesAtOnceInOrder: with -inflight 4, four devices' publishes await
// their acknowledgement at the same time, never two of one device, and each device's readings
// are published in sequence order.
func TestInflightPublishesDevicesAtOnceInOrder(t *testing.T) {
	const inflight = 4
	var mu sync.Mutex
	busy := map[string]bool{} // device → a publish of it is in flight
	last := map[string]int64{}
	all := make(chan struct{})
	var n, peak int
	pub := publisherFunc(func(ctx context.Context, topic string, payload []byte, _ bool, _ map[string]string) error {
		var p struct {
			DeviceID string `json:"deviceId"`
			Seq      int64  `json:"seq"`
		}
		if err := json.Unmarshal(payload, &p); err != nil {
			return err
		}
		mu.Lock()
		if busy[p.DeviceID] {
			t.Errorf("two publishes of %s in flight", p.DeviceID)
		}
		if s, ok := last[p.DeviceID]; ok && p.Seq != s+1 {
			t.Errorf("%s: seq %d after %d", p.DeviceID, p.Seq, s)
		}
		busy[p.DeviceID], last[p.DeviceID] = true, p.Seq
		n++
		peak = max(peak, n)
		if n == inflight {
			select {
			case <-all:
			default:
				close(all) // the first time four are in flight at once, everyone goes on
			}
		}
		mu.Unlock()
		select {
		case <-all:
		case <-time.After(10 * time.Second): // a deadline, not synchronisation
			t.Errorf("only %d publishes in flight at once; want %d", peak, inflight)
		}
		mu.Lock()
		busy[p.DeviceID] = false
		n--
		mu.Unlock()
		return nil
	})
	s, err := simulate(context.Background(), simConfig{devices: 8, assets: 2, count: 80, topicPrefix: "d", seqStart: 1, inflight: inflight}, pub, clock())
	if err != nil || s.Published != 80 || s.Failed != 0 {
		t.Fatalf("summary %+v err %v", s, err)
	}
	if peak != inflight {
		t.Fatalf("at most %d publishes in flight; want %d", peak, inflight)
	}
	for d, seq := range s.LastSeq {
		if seq != 10 {
			t.Errorf("%s: last seq %d, want 10", d, seq)
		}
	}
}

type publisherFunc func(ctx context.Context, topic string, payload []byte, retain bool, props map[string]string) error

func (f publisherFunc) Publish(ctx context.Context, topic string, payload []byte, retain bool, props map[string]string) error {
	return f(ctx, topic, payload, retain, props)
}

// TestAgainstEmbeddedBroker publishes through the real broker: a subscriber gets every telemetry
// message, and a subscriber that comes later gets the retained configuration.
func TestAgainstEmbeddedBroker(t *testing.T) {
	b := brokertest.Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	got := make(chan *paho.Publish, 100)
	sub := connect(t, ctx, b.Addr(), "sub-telemetry", got)
	if _, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/+/telemetry", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}

	pub, err := dial(ctx, b.URL(false), "devicesim-test", credentials{}, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	s, err := simulate(ctx, simConfig{devices: 3, assets: 2, count: 20, rate: 0, topicPrefix: "devices",
		configPrefix: "config/assets", publishConfig: true, seqStart: 1}, pub, time.Now)
	if err != nil || s.Published != 20 || s.Configs != 2 {
		t.Fatalf("summary %+v err %v", s, err)
	}
	if err := pub.Close(ctx); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		select {
		case m := <-got:
			if m.QoS != 1 {
				t.Fatalf("message %d at QoS %d", i, m.QoS)
			}
		case <-ctx.Done():
			t.Fatalf("received %d of 20 telemetry messages", i)
		}
	}

	retained := make(chan *paho.Publish, 10)
	late := connect(t, ctx, b.Addr(), "sub-config", retained)
	if _, err := late.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "config/assets/+", QoS: 1}}}); err != nil {
		t.Fatal(err)
	}
	for i := range 2 {
		select {
		case m := <-retained:
			if !m.Retain {
				t.Fatalf("config %s not retained", m.Topic)
			}
		case <-ctx.Done():
			t.Fatalf("received %d of 2 retained configurations", i)
		}
	}
}

func connect(t *testing.T, ctx context.Context, addr, id string, out chan<- *paho.Publish) *paho.Client {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: conn, OnPublishReceived: []func(paho.PublishReceived) (bool, error){
		func(pr paho.PublishReceived) (bool, error) { out <- pr.Packet; return true, nil },
	}})
	if _, err := c.Connect(ctx, &paho.Connect{ClientID: id, CleanStart: true, KeepAlive: 30}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Disconnect(&paho.Disconnect{}) })
	return c
}
