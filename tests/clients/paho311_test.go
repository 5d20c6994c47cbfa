package clients

import (
	"testing"
	"time"

	pahomqtt "github.com/eclipse/paho.mqtt.golang"
)

// pahoClient is an Eclipse Paho Go 3.1.1 client (github.com/eclipse/paho.mqtt.golang, the client
// of Dapr's in-tree pubsub.mqtt3) whose received messages go to msgs.
type pahoClient struct {
	t    testing.TB
	name string
	c    pahomqtt.Client
	msgs chan pahomqtt.Message
}

// connectPaho connects a 3.1.1 client with id; clean false keeps its session in the broker.
// autoAck false leaves received QoS 1 messages unacknowledged (Message.Ack sends the PUBACK).
// Messages of subscriptions the session already has reach msgs too.
func connectPaho(t testing.TB, b brokerUnderTest, id string, clean, autoAck bool) *pahoClient {
	t.Helper()
	p := &pahoClient{t: t, name: id, msgs: make(chan pahomqtt.Message, 10000)}
	o := pahomqtt.NewClientOptions().
		AddBroker("tcp://" + b.Addr()).
		SetClientID(id).
		SetProtocolVersion(4). // MQTT 3.1.1, and no fallback to 3.1
		SetCleanSession(clean).
		SetAutoReconnect(false).
		SetConnectRetry(false).
		SetOrderMatters(true).
		SetAutoAckDisabled(!autoAck).
		SetConnectTimeout(clientTimeout).
		SetDefaultPublishHandler(func(_ pahomqtt.Client, m pahomqtt.Message) { p.msgs <- m })
	p.c = pahomqtt.NewClient(o)
	tok := p.c.Connect()
	if !tok.WaitTimeout(clientTimeout) {
		t.Fatalf("%s: no CONNACK within %s", id, clientTimeout)
	}
	if err := tok.Error(); err != nil {
		t.Fatalf("%s: connect: %v", id, err)
	}
	t.Cleanup(func() {
		if p.c.IsConnectionOpen() {
			p.c.Disconnect(0)
		}
	})
	return p
}

// wait waits for tok and fails the test on a time-out or an error.
func (p *pahoClient) wait(what string, tok pahomqtt.Token) {
	p.t.Helper()
	if !tok.WaitTimeout(clientTimeout) {
		p.t.Fatalf("%s: %s: no answer within %s", p.name, what, clientTimeout)
	}
	if err := tok.Error(); err != nil {
		p.t.Fatalf("%s: %s: %v", p.name, what, err)
	}
}

// publishAll publishes each payload at QoS 1 and waits for its PUBACK: the broker has it.
func (p *pahoClient) publishAll(topic string, payloads []string) {
	p.t.Helper()
	for _, pl := range payloads {
		p.wait("publish "+pl, p.c.Publish(topic, 1, false, pl))
	}
}

// readUntil returns the messages received up to the one whose payload is marker (left out, and
// acknowledged).
func (p *pahoClient) readUntil(marker string) []pahomqtt.Message {
	p.t.Helper()
	var out []pahomqtt.Message
	deadline := time.After(clientTimeout)
	for {
		select {
		case m := <-p.msgs:
			if string(m.Payload()) == marker {
				m.Ack() // a no-op when the client acknowledges by itself
				return out
			}
			out = append(out, m)
		case <-deadline:
			p.t.Fatalf("%s: no %q within %s (got %d messages before)", p.name, marker, clientTimeout, len(out))
		}
	}
}

// TestPahoGo311PersistentSessionAcrossBrokerRestart: with Paho's Go 3.1.1 client, a QoS 1
// persistent session (clean session 0) loses nothing across a broker restart (mqbroker: SIGKILL
// with a data directory; Mosquitto: SIGTERM): the messages queued while the client was away, and
// the ones it had received but not acknowledged, which come again (MQTT 3.1.1 §3.1.2.4
// [MQTT-3.1.2-4], §4.4 [MQTT-4.4.0-1]); the subscription itself survives (the client does not
// subscribe again).
func TestPahoGo311PersistentSessionAcrossBrokerRestart(t *testing.T) {
	forEachBroker(t, v311, func(t *testing.T, b brokerUnderTest) {
		const topic, n = "paho/readings", 20
		sub := connectPaho(t, b, "paho-sub", false, true)
		sub.wait("subscribe", sub.c.Subscribe(topic, 1, nil))
		sub.c.Disconnect(250)

		// Queued while the subscriber is away, then the broker restarts.
		pub := connectPaho(t, b, "paho-pub", true, true)
		queued := seqPayloads("queued", n)
		pub.publishAll(topic, append(queued, "end-queued"))
		pub.c.Disconnect(250)
		b.Restart(t)

		// Received but not acknowledged when the broker restarts.
		sub = connectPaho(t, b, "paho-sub", false, false)
		got := sub.readUntil("end-queued")
		for _, m := range got {
			m.Ack()
		}
		checkPahoBatch(t, "queued across a restart", got, queued, nil)
		pub = connectPaho(t, b, "paho-pub", true, true)
		unacked := seqPayloads("unacked", n)
		pub.publishAll(topic, append(unacked, "end-unacked"))
		pub.c.Disconnect(250)
		firstIDs := map[string]uint16{}
		if got := sub.readUntil("end-unacked"); len(got) != n {
			t.Fatalf("unacked batch: %d messages before its marker, want %d", len(got), n)
		} else {
			for _, m := range got {
				firstIDs[string(m.Payload())] = m.MessageID()
			}
		}
		b.Restart(t) // sub's connection drops with n PUBLISHes unacknowledged

		// The broker resends the unacknowledged PUBLISHes first [MQTT-4.4.0-1], before the marker
		// published now (end-unacked was acknowledged by readUntil).
		again := connectPaho(t, b, "paho-sub", false, true)
		pub = connectPaho(t, b, "paho-pub", true, true)
		pub.publishAll(topic, []string{"end-again"})
		got = again.readUntil("end-again")
		checkPahoBatch(t, "unacknowledged across a restart", got, unacked, append(queued, "end-queued", "end-unacked"))
		for _, m := range got {
			if id, ok := firstIDs[string(m.Payload())]; ok && id != m.MessageID() {
				t.Logf("%s: %q came again with packet id %d, first sent as %d", t.Name(), m.Payload(), m.MessageID(), id)
			}
			if !m.Duplicate() {
				t.Logf("%s: %q came again without DUP set", t.Name(), m.Payload())
			}
		}
	})
}

// checkPahoBatch is checkBatch for QoS 1 Paho messages: want in order, nothing lost; a repeat
// (of want, or of the earlier batch before) is logged.
func checkPahoBatch(t *testing.T, when string, got []pahomqtt.Message, want, before []string) {
	t.Helper()
	ms := make([]message, len(got))
	for i, m := range got {
		ms[i] = message{qos: int(m.Qos()), topic: m.Topic(), payload: string(m.Payload())}
	}
	checkBatch(t, 1, when, ms, want, before)
}
