package clients

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	pahomqtt "github.com/eclipse/paho.mqtt.golang"
	"golang.org/x/net/websocket"
)

// startWSBroker starts mqbroker with a WebSocket listener and returns it with its ws:// URL (the
// path is the one browser clients such as MQTT.js use; mqbroker serves any). Debian's Mosquitto
// 2.0.11 is not a reference here: it is built without WebSocket support (a `protocol websockets`
// listener fails with "Unable to start any listening sockets").
func startWSBroker(t *testing.T) (*mqbrokerProc, string) {
	t.Helper()
	b := startMQBrokerProc(t, true)
	return b, fmt.Sprintf("ws://127.0.0.1:%d/mqtt", b.wsPort)
}

// wsV5Client is an MQTT v5 client (paho.golang) over a WebSocket dialled as a browser does:
// an Origin header, subprotocol "mqtt", binary frames (RFC 6455; MQTT v5 §6).
type wsV5Client struct {
	*paho.Client
	msgs chan *paho.Publish
}

func dialWSV5(t *testing.T, url, id string) *wsV5Client {
	t.Helper()
	cfg, err := websocket.NewConfig(url, "http://localhost/")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Protocol = []string{"mqtt"}
	ws, err := websocket.DialConfig(cfg)
	if err != nil {
		t.Fatalf("WebSocket dial %s: %v", url, err)
	}
	ws.PayloadType = websocket.BinaryFrame
	c := &wsV5Client{msgs: make(chan *paho.Publish, 1000)}
	c.Client = paho.NewClient(paho.ClientConfig{
		ClientID: id,
		Conn:     ws,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.msgs <- pr.Packet
			return true, nil
		}},
	})
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true})
	if err != nil {
		t.Fatalf("%s: CONNECT over WebSocket: %v", id, err)
	}
	if ca.ReasonCode != 0 {
		t.Fatalf("%s: CONNACK 0x%02x over WebSocket", id, ca.ReasonCode)
	}
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		ws.Close()
		<-c.Done()
	})
	return c
}

func (c *wsV5Client) next(t *testing.T) *paho.Publish {
	t.Helper()
	select {
	case p := <-c.msgs:
		return p
	case <-time.After(clientTimeout):
		t.Fatalf("no message over WebSocket within %s", clientTimeout)
		return nil
	}
}

// TestWebSocketClients: MQTT over WebSocket with the clients a browser-side or gateway app would
// use, against mqbroker's -ws-addr listener: a v5 client (paho.golang over a WebSocket with
// subprotocol "mqtt" and binary frames) and a 3.1.1 client (paho.mqtt.golang's ws:// transport)
// subscribe and publish at QoS 0, 1 and 2, and messages cross between WebSocket and TCP clients
// (MQTT v5 §6.0 [MQTT-6.0.0-1] [MQTT-6.0.0-4]; MQTT 3.1.1 §6).
func TestWebSocketClients(t *testing.T) {
	b, url := startWSBroker(t)

	t.Run("mqttv5", func(t *testing.T) {
		sub := dialWSV5(t, url, "ws-v5-sub")
		pub := dialWSV5(t, url, "ws-v5-pub")
		ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
		defer cancel()
		for qos := byte(0); qos <= 2; qos++ {
			topic := fmt.Sprintf("ws/v5/q%d", qos)
			sa, err := sub.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: topic, QoS: qos}}})
			if err != nil || sa.Reasons[0] != qos {
				t.Fatalf("SUBSCRIBE %s over WebSocket: %v %v", topic, err, sa)
			}
			want := seqPayloads(topic, 10)
			for _, p := range want {
				if _, err := pub.Publish(ctx, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(p)}); err != nil {
					t.Fatalf("PUBLISH over WebSocket: %v", err)
				}
			}
			for _, w := range want {
				if m := sub.next(t); string(m.Payload) != w || m.QoS != qos {
					t.Fatalf("got %q at QoS %d, want %q at QoS %d in order", m.Payload, m.QoS, w, qos)
				}
			}
		}
		// From a TCP device to the WebSocket subscriber, and back to a TCP subscriber.
		publish(t, b, v5, []string{"from-tcp"}, "-q", "1", "-t", "ws/v5/q1")
		if m := sub.next(t); string(m.Payload) != "from-tcp" {
			t.Fatalf("TCP to WebSocket: got %q", m.Payload)
		}
		tcp := startSub(t, "tcp-sub", b, v5, "-q", "1", "-t", "ws/to-tcp", "-C", "1", "-W", "30")
		tcp.waitSubscribed()
		if _, err := pub.Publish(ctx, &paho.Publish{Topic: "ws/to-tcp", QoS: 1, Payload: []byte("from-ws")}); err != nil {
			t.Fatal(err)
		}
		if m := tcp.next(); m.payload != "from-ws" {
			t.Fatalf("WebSocket to TCP: got %+v", m)
		}
		tcp.wait()
	})

	t.Run("mqttv311", func(t *testing.T) {
		sub := connectPahoURL(t, url, "ws-311-sub")
		pub := connectPahoURL(t, url, "ws-311-pub")
		for qos := byte(0); qos <= 2; qos++ {
			topic := fmt.Sprintf("ws/311/q%d", qos)
			sub.wait("subscribe", sub.c.Subscribe(topic, qos, nil))
			want := seqPayloads(topic, 10)
			for _, p := range want {
				pub.wait("publish", pub.c.Publish(topic, qos, false, p))
			}
			var got []string
			for range want {
				select {
				case m := <-sub.msgs:
					if m.Qos() != qos {
						t.Fatalf("%s: %q at QoS %d", topic, m.Payload(), m.Qos())
					}
					got = append(got, string(m.Payload()))
				case <-time.After(clientTimeout):
					t.Fatalf("%s: %d of %d messages over WebSocket", topic, len(got), len(want))
				}
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%s: got %q, want %q in order", topic, got, want)
			}
		}
		tcp := startSub(t, "tcp-sub", b, v311, "-q", "1", "-t", "ws/311-to-tcp", "-C", "1", "-W", "30")
		tcp.waitSubscribed()
		pub.wait("publish", pub.c.Publish("ws/311-to-tcp", 1, false, "from-ws"))
		if m := tcp.next(); m.payload != "from-ws" {
			t.Fatalf("WebSocket to TCP: got %+v", m)
		}
		tcp.wait()
	})
}

// connectPahoURL connects paho.mqtt.golang (3.1.1) to url (ws:// here), clean session.
func connectPahoURL(t *testing.T, url, id string) *pahoClient {
	t.Helper()
	p := &pahoClient{t: t, name: id, msgs: make(chan pahomqtt.Message, 1000)}
	o := pahomqtt.NewClientOptions().AddBroker(url).SetClientID(id).SetProtocolVersion(4).
		SetCleanSession(true).SetAutoReconnect(false).SetOrderMatters(true).SetConnectTimeout(clientTimeout).
		SetDefaultPublishHandler(func(_ pahomqtt.Client, m pahomqtt.Message) { p.msgs <- m })
	p.c = pahomqtt.NewClient(o)
	p.wait("connect over WebSocket", p.c.Connect())
	t.Cleanup(func() { p.c.Disconnect(0) })
	return p
}
