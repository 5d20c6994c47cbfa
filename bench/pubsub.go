package bench

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/dapr/go-sdk/service/common"
	daprgrpc "github.com/dapr/go-sdk/service/grpc"
)

// pubsubContender is one way of carrying pub/sub through daprd.
type pubsubContender struct {
	id        string // short name in results and -contenders
	title     string // its row in BENCHMARKS.md
	broker    brokerKind
	program   string // component process; "" when the component is in daprd
	bin       string // the program's binary when not the one built for the run (Config.PubsubB)
	base      string // for a Config.PubsubB contender, the id of the contender it copies
	typ       string // Component spec.type
	metadata  func(brokerAt string) map[string]string
	onDaprd15 bool // also run on daprd 1.15.0
	// partitions > 1 subscribes the app to the K partition topics $partition/<i>of<K>/<topic> of
	// pubsub.mqttv5 instead of the topic (the parallelism that survives daprd 1.16's serial
	// dispatch; see README "Ordering and parallelism").
	partitions int
}

// pubsubContenders are compared in every round: noop is the floor, mqtt3-mosquitto the named peer
// (the report refers to them by id).
var pubsubContenders = []pubsubContender{
	{id: "noop", title: "no-op pluggable (floor)", program: "noop", typ: "pubsub.noop", onDaprd15: true,
		metadata: func(string) map[string]string { return nil }},
	{id: "in-memory", title: "pubsub.in-memory (in daprd)", typ: "pubsub.in-memory", onDaprd15: true,
		metadata: func(string) map[string]string { return nil }},
	{id: "mqtt3-mosquitto", title: "pubsub.mqtt3 (in daprd), Mosquitto", broker: mosquitto, typ: "pubsub.mqtt3", onDaprd15: true,
		metadata: func(at string) map[string]string {
			return map[string]string{"url": "tcp://" + at, "qos": "1", "cleanSession": "false"}
		}},
	{id: "mqttv5-mosquitto", title: "pubsub.mqttv5, Mosquitto", broker: mosquitto, program: "pubsub-mqtt5", typ: "pubsub.mqttv5", onDaprd15: true,
		metadata: mqttv5Metadata},
	{id: "mqttv5-mqbroker", title: "pubsub.mqttv5, mqbroker in memory", broker: mqbrokerMemory, program: "pubsub-mqtt5", typ: "pubsub.mqttv5", onDaprd15: true,
		metadata: mqttv5Metadata},
	{id: "mqttv5-mqbroker-disk", title: "pubsub.mqttv5, mqbroker with a data directory", broker: mqbrokerDisk, program: "pubsub-mqtt5", typ: "pubsub.mqttv5",
		metadata: mqttv5Metadata},
	// One topic has one ordering key, which goes to one partition: ordering none spreads the
	// messages round robin over the partitions.
	{id: "mqttv5-mqbroker-part4", title: "pubsub.mqttv5, mqbroker in memory, 4 partitions (ordering: none)", broker: mqbrokerMemory, program: "pubsub-mqtt5", typ: "pubsub.mqttv5",
		partitions: 4, metadata: func(at string) map[string]string {
			md := mqttv5Metadata(at)
			md["ordering"] = "none"
			return md
		}},
	{id: "mqttv5-mqbroker-disk-part4", title: "pubsub.mqttv5, mqbroker with a data directory, 4 partitions (ordering: none)", broker: mqbrokerDisk, program: "pubsub-mqtt5", typ: "pubsub.mqttv5",
		partitions: 4, metadata: func(at string) map[string]string {
			md := mqttv5Metadata(at)
			md["ordering"] = "none"
			return md
		}},
}

// pubsubContenders are the contenders of this run: pubsubContenders, and with Config.PubsubB a
// copy of each pubsub.mqttv5 contender that runs that binary.
func (h *harness) pubsubContenders() []pubsubContender {
	out := slices.Clone(pubsubContenders)
	if h.cfg.PubsubB == "" {
		return out
	}
	for _, c := range pubsubContenders {
		if c.program != "pubsub-mqtt5" {
			continue
		}
		c.base, c.id, c.bin = c.id, c.id+"-b", h.cfg.PubsubB
		c.title += fmt.Sprintf(" — B: %s", h.cfg.PubsubB)
		out = append(out, c)
	}
	return out
}

// mqttv5Metadata is the component's configuration in the benchmarks: its defaults (QoS 1,
// ack after the handler) on the given broker.
func mqttv5Metadata(at string) map[string]string {
	return map[string]string{"url": "mqtt://" + at, "clientID": "bench", "connectTimeout": "10s"}
}

// Topics of the pub/sub runs: one subscription with CloudEvents, one with raw payloads.
const (
	topicCE  = "bench-ce"
	topicRaw = "bench-raw"
)

// receiver is the subscriber app's record of one topic: which messages of the current phase
// arrived. Each phase has its own tag, so a late redelivery of an earlier phase is not counted.
type receiver struct {
	mu    sync.Mutex
	phase string
	want  int
	seen  []bool
	got   int
	dups  int
	done  chan struct{} // closed when got reaches want
}

// expect starts a phase: n distinct messages tagged phase.
func (r *receiver) expect(phase string, n int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.phase, r.want, r.seen, r.got, r.dups = phase, n, make([]bool, n), 0, 0
	r.done = make(chan struct{})
}

func (r *receiver) deliver(phase string, seq int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if phase != r.phase || seq < 0 || seq >= len(r.seen) {
		return
	}
	if r.seen[seq] {
		r.dups++
		return
	}
	r.seen[seq] = true
	r.got++
	if r.got == r.want {
		close(r.done)
	}
}

// progress is how many distinct messages of the phase arrived.
func (r *receiver) progress() (got, want int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got, r.want
}

// payload is a 64-byte JSON message of a phase.
func payload(phase string, seq int) []byte {
	b := fmt.Appendf(nil, `{"p":%q,"s":%d,"x":"`, phase, seq)
	for len(b) < 62 {
		b = append(b, 'x')
	}
	return append(b, '"', '}')
}

// subscriberApp is the go-sdk gRPC app that daprd delivers to; it answers after recording the
// message, so every message is acknowledged after its handler (daprd's ack-after-handler).
type subscriberApp struct {
	port int
	svc  common.Service
	recv map[string]*receiver
}

func startSubscriberApp(pubsubName string, partitions int) (*subscriberApp, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	a := &subscriberApp{port: l.Addr().(*net.TCPAddr).Port, svc: daprgrpc.NewServiceWithListener(l),
		recv: map[string]*receiver{topicCE: {}, topicRaw: {}}}
	for topic, r := range a.recv {
		r.expect("none", 0)
		subTopics := []string{topic}
		if partitions > 1 {
			subTopics = subTopics[:0]
			for i := range partitions {
				subTopics = append(subTopics, fmt.Sprintf("$partition/%dof%d/%s", i, partitions, topic))
			}
		}
		for _, st := range subTopics {
			if err := a.subscribe(pubsubName, topic, st, r); err != nil {
				l.Close()
				return nil, err
			}
		}
	}
	go func() { _ = a.svc.Start() }()
	return a, nil
}

// subscribe adds the handler of one Dapr subscription (subTopic) that records the messages of
// topic in r.
func (a *subscriberApp) subscribe(pubsubName, topic, subTopic string, r *receiver) error {
	sub := &common.Subscription{PubsubName: pubsubName, Topic: subTopic}
	if topic == topicRaw {
		sub.Metadata = map[string]string{"rawPayload": "true"}
	}
	return a.svc.AddTopicEventHandler(sub, func(_ context.Context, e *common.TopicEvent) (bool, error) {
		var m struct {
			P string `json:"p"`
			S int    `json:"s"`
		}
		if err := json.Unmarshal(e.RawData, &m); err != nil {
			return false, fmt.Errorf("not a benchmark message: %q", e.RawData)
		}
		r.deliver(m.P, m.S)
		return false, nil
	})
}

// pubsubRun is one contender's round: its stack up, warmed, measured, down.
type pubsubRun struct {
	h     *harness
	c     pubsubContender
	daprd daprdBinary
	key   string // results key: contender id, with the daprd version when not the default
}

func (r *pubsubRun) run(ctx context.Context, round int) error {
	h := r.h
	s, err := h.newStack(r.c.id)
	if err != nil {
		return err
	}
	defer s.close()
	app, err := startSubscriberApp("ps", r.c.partitions)
	if err != nil {
		return err
	}
	defer app.svc.Stop()
	if err := s.startBroker(ctx, r.c.broker); err != nil {
		return err
	}
	if r.c.program != "" {
		if err := s.startComponentBin(ctx, r.c.program, r.c.bin); err != nil {
			return err
		}
	}
	if err := s.component("ps", r.c.typ, r.c.metadata(s.brokerAt)); err != nil {
		return err
	}
	if err := s.startDaprd(ctx, r.daprd.path, app.port); err != nil {
		return err
	}
	client, err := dapr.NewClientWithAddressContext(ctx, fmt.Sprintf("127.0.0.1:%d", s.daprGRPC))
	if err != nil {
		return fmt.Errorf("dapr client: %w", err)
	}
	defer client.Close()

	publish := func(ctx context.Context, topic string, data []byte) error {
		opts := []dapr.PublishEventOption{dapr.PublishEventWithContentType("application/json")}
		if topic == topicRaw {
			opts = append(opts, dapr.PublishEventWithRawPayload())
		}
		ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		defer cancel()
		return client.PublishEvent(ctx, "ps", topic, data, opts...)
	}
	// Warm-up: daprd reports healthy before its subscriptions reach the broker, and a message
	// published before that may be dropped (MQTT discards a message nobody subscribes to). Publish
	// until one arrives on each topic.
	for _, topic := range []string{topicCE, topicRaw} {
		rc := app.recv[topic]
		rc.expect("warm", 1)
		deadline := time.Now().Add(60 * time.Second)
		for {
			_ = publish(ctx, topic, payload("warm", 0)) // an error here is the same as a drop
			select {
			case <-rc.done:
			case <-time.After(500 * time.Millisecond): // retry interval of the warm-up
				if time.Now().Before(deadline) && ctx.Err() == nil {
					continue
				}
				return fmt.Errorf("warm-up: nothing delivered on %s within 60 s", topic)
			}
			break
		}
	}
	idle := s.idleRSS()
	for name, kb := range idle {
		h.res.add(r.key, "rss-idle/"+name, float64(kb)/1024)
	}

	n, single := h.cfg.pubsubMessages(), h.cfg.singleMessages()
	// Throughput: 8 publishers, then the delivered rate, CloudEvents and raw payloads.
	for _, topic := range []string{topicCE, topicRaw} {
		phase := fmt.Sprintf("t%d", round)
		rc := app.recv[topic]
		rc.expect(phase, n)
		var next atomic.Int64
		var pubErr atomic.Value
		u, err := s.measure(func() error {
			var wg sync.WaitGroup
			for range publishers {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := next.Add(1) - 1; i < int64(n); i = next.Add(1) - 1 {
						if err := publish(ctx, topic, payload(phase, int(i))); err != nil {
							pubErr.CompareAndSwap(nil, err)
							return
						}
					}
				}()
			}
			wg.Wait()
			if e, _ := pubErr.Load().(error); e != nil {
				return fmt.Errorf("publish: %w", e)
			}
			return waitDone(ctx, rc, h.cfg.phaseTimeout())
		})
		if err != nil {
			return fmt.Errorf("%s, 8 publishers: %w", topic, err)
		}
		kind := "ce"
		if topic == topicRaw {
			kind = "raw"
		}
		h.res.add(r.key, "msgs/"+kind, float64(n)/u.wall.Seconds())
		if topic == topicCE && u.commits >= 0 {
			h.res.add(r.key, "commits", float64(u.commits)/float64(n))
		}
		if topic == topicCE { // CPU and memory of the CloudEvents run (Dapr's default)
			for name, cpu := range u.cpu {
				h.res.add(r.key, "cpu/"+name, float64(cpu.Microseconds())/float64(n))
			}
			h.res.add(r.key, "cpu-harness", float64(u.self.Microseconds())/float64(n))
			for name, kb := range u.rss {
				h.res.add(r.key, "rss-load/"+name, float64(kb)/1024)
			}
			for name, kb := range u.hwm {
				h.res.add(r.key, "rss-peak/"+name, float64(kb)/1024)
			}
		}
	}

	// Latency: one publisher, one publish at a time (CloudEvents); the deliveries are awaited at
	// the end so that they do not overlap the next run.
	phase := fmt.Sprintf("l%d", round)
	rc := app.recv[topicCE]
	rc.expect(phase, single)
	lat := make([]time.Duration, 0, single)
	for i := range single {
		t0 := time.Now()
		if err := publish(ctx, topicCE, payload(phase, i)); err != nil {
			return fmt.Errorf("one publisher: publish: %w", err)
		}
		lat = append(lat, time.Since(t0))
	}
	if err := waitDone(ctx, rc, h.cfg.phaseTimeout()); err != nil {
		return fmt.Errorf("one publisher: %w", err)
	}
	var sum time.Duration
	for _, d := range lat {
		sum += d
	}
	h.res.add(r.key, "single/msgs", float64(single)/sum.Seconds())
	h.res.add(r.key, "single/p50", float64(percentile(lat, 50).Microseconds())/1000)
	h.res.add(r.key, "single/p99", float64(percentile(lat, 99).Microseconds())/1000)
	return nil
}

// publishers is the number of concurrent publishing clients (and of state clients).
const publishers = 8

// waitDone waits until every message of rc's phase arrived.
func waitDone(ctx context.Context, rc *receiver, timeout time.Duration) error {
	rc.mu.Lock()
	done := rc.done
	rc.mu.Unlock()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-time.After(timeout):
		got, want := rc.progress()
		return fmt.Errorf("%d of %d messages delivered within %s", got, want, timeout)
	}
}
