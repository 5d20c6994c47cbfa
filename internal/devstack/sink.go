package devstack

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"time"
	"unicode/utf8"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"

	"github.com/mqdapr/mqdapr/internal/mqttconn"
)

// SinkOptions configure RunSink.
type SinkOptions struct {
	BrokerURL string
	ClientID  string   // the MQTT client id is mqdapr-run-<ClientID>-sink; its session is persistent
	Topics    []string // filters subscribed with QoS 1
	File      string   // JSON lines, appended
	Ready     string   // created once every filter is subscribed (a start-up signal for the supervisor)
	Log       *slog.Logger
}

// sinkReceiveMaximum bounds the unacknowledged messages in flight to the sink, and so its buffer.
const sinkReceiveMaximum = 64

// RunSink is the dead-letter consumer of `make run`: a persistent MQTT session (clean start 0)
// subscribed to the rejected and dead-letter topics, so that the broker keeps what is published
// there while the sink is down and a publish there is answered 0x00, not 0x10 (no matching
// subscribers: discarded). Each message is appended to File as one line
// {"topic","receivedAt","properties","payload"|"payloadBase64"} and fsynced before it is
// acknowledged. It returns when ctx ends, or with the error that stopped it (a failed write: the
// message stays unacknowledged and is redelivered to the next run of the sink).
func RunSink(ctx context.Context, o SinkOptions) error {
	if o.Log == nil {
		o.Log = slog.Default()
	}
	f, err := os.OpenFile(o.File, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	if o.Ready != "" {
		os.Remove(o.Ready)
	}
	type received struct {
		ack mqttconn.Ack // acknowledges it on the connection it came on
		p   *paho.Publish
	}
	msgs := make(chan received, sinkReceiveMaximum) // the broker sends at most that many unacked
	failed := make(chan error, 1)
	fail := func(err error) {
		select {
		case failed <- err:
		default:
		}
	}
	s := mqttconn.DefaultSettings()
	s.URL, s.ConsumerID, s.ClientID = o.BrokerURL, "mqdapr-run", o.ClientID
	s.SessionExpiry = 7 * 24 * time.Hour
	var subs []paho.SubscribeOptions
	for _, t := range o.Topics {
		subs = append(subs, paho.SubscribeOptions{Topic: t, QoS: 1})
	}
	conn, err := mqttconn.Dial(ctx, mqttconn.Options{
		Settings: s, Kind: "sink", ReceiveMaximum: sinkReceiveMaximum, ManualAcks: true,
		OnPublish: func(rc mqttconn.Received) {
			msgs <- received{rc.Ack, rc.Packet}
		},
		OnConnectionUp: func(cm *autopaho.ConnectionManager, _ *paho.Connack) {
			// Every connection subscribes again: harmless on a resumed session, needed on a new one.
			sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
			defer cancel()
			ack, err := cm.Subscribe(sctx, &paho.Subscribe{Subscriptions: subs})
			if err == nil && ack != nil {
				for i, rc := range ack.Reasons {
					if rc >= 0x80 {
						err = fmt.Errorf("SUBACK %s for %s", mqttconn.ReasonString(rc), o.Topics[min(i, len(o.Topics)-1)])
					}
				}
			}
			if err != nil {
				fail(fmt.Errorf("devstack: sink subscribing to %v: %w", o.Topics, err))
				return
			}
			if o.Ready != "" {
				if err := os.WriteFile(o.Ready, nil, 0o644); err != nil {
					fail(err)
				}
			}
		},
	})
	if err != nil {
		return err
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = conn.Close(cctx)
	}()
	o.Log.Info("dead-letter sink subscribed", "topics", o.Topics, "file", o.File)
	for {
		select {
		case <-ctx.Done():
			return nil
		case err := <-failed:
			return err
		case m := <-msgs:
			if err := appendLine(f, m.p); err != nil {
				return fmt.Errorf("devstack: sink writing %s: %w (the message stays unacknowledged)", o.File, err)
			}
			if err := m.ack.Send(); err != nil {
				o.Log.Warn("dead-letter sink: ack not sent; the broker will redeliver", "topic", m.p.Topic, "err", err)
			}
			o.Log.Info("dead letter kept", "topic", m.p.Topic, "file", o.File)
		}
	}
}

func appendLine(f *os.File, p *paho.Publish) error {
	line := map[string]any{"topic": p.Topic, "receivedAt": time.Now().UTC().Format(time.RFC3339Nano)}
	if p.Properties != nil && len(p.Properties.User) > 0 {
		props := map[string]string{}
		for _, u := range p.Properties.User {
			props[u.Key] = u.Value
		}
		line["properties"] = props
	}
	if utf8.Valid(p.Payload) {
		line["payload"] = string(p.Payload)
	} else {
		line["payloadBase64"] = base64.StdEncoding.EncodeToString(p.Payload)
	}
	b, err := json.Marshal(line)
	if err != nil {
		return err
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		return err
	}
	return f.Sync()
}

// WaitFile waits until path exists.
func WaitFile(path string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		return poll(ctx, func() error { _, err := os.Stat(path); return err })
	}
}
