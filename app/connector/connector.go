package connector

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
)

// Message is one delivery from the pub/sub, as daprd hands it to the app with rawPayload.
type Message struct {
	Topic    string            // the MQTT topic the device published to
	Data     []byte            // the raw payload
	Metadata map[string]string // MQTT user properties and mqtt-* keys (gRPC lower-cases keys)
}

// MessageIDProperty is the user property a publisher may set to identify a message when its
// payload has no seq.
const MessageIDProperty = "message-id"

// Connector handles telemetry and asset configuration. Safe for concurrent use.
type Connector struct {
	opts     Options
	log      *slog.Logger
	assets   *assets
	last     *lastValues
	counters Counters
}

// New checks opts and returns a Connector; it does no I/O.
func New(opts Options) (*Connector, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	return &Connector{
		opts:   opts,
		log:    opts.Log,
		assets: newAssets(opts.Store, opts.Now, opts.AssetMissTTL),
		last:   newLastValues(opts.Store, opts.Log.Warn),
	}, nil
}

// Flush waits until the work done after acks (done marks of the dedup records, last-known
// values) reached the state store, or ctx ends. Call it at shutdown after the last delivery.
func (c *Connector) Flush(ctx context.Context) error {
	return errors.Join(c.opts.Dedup.Flush(ctx), c.last.flush(ctx))
}

// Counters returns the live counters.
func (c *Connector) Counters() *Counters { return &c.counters }

// Handle routes m by its topic to HandleTelemetry or HandleConfig. ErrUnroutable when neither
// filter matches.
func (c *Connector) Handle(ctx context.Context, m Message) error {
	if ok, _ := matchTopic(c.opts.TelemetryFilter, m.Topic); ok {
		return c.HandleTelemetry(ctx, m)
	}
	if ok, _ := matchTopic(c.opts.ConfigFilter, m.Topic); ok {
		return c.HandleConfig(ctx, m)
	}
	return fmt.Errorf("%w: %q (telemetry %q, config %q)", ErrUnroutable, m.Topic, c.opts.TelemetryFilter, c.opts.ConfigFilter)
}

// HandleTelemetry processes one telemetry delivery. It returns nil when the message may be acked:
// its row is durable in the lake (written now or by an earlier delivery), or it was rejected and
// the dead-letter publish was acknowledged. Any error means "redeliver": nothing the redelivery
// could duplicate has been left behind.
func (c *Connector) HandleTelemetry(ctx context.Context, m Message) error {
	c.counters.Received.Add(1)
	err := c.handleTelemetry(ctx, m)
	if err != nil {
		c.counters.Failed.Add(1)
		c.log.Warn("telemetry delivery failed; it will be redelivered", "topic", m.Topic, "err", err)
	}
	return err
}

func (c *Connector) handleTelemetry(ctx context.Context, m Message) error {
	_, topicDevice := matchTopic(c.opts.TelemetryFilter, m.Topic)
	if strings.ContainsAny(topicDevice, "+#") { // handed the filter, not the topic: no check
		topicDevice = ""
	}
	r, err := c.opts.Validator.Parse(m.Data, topicDevice, m.Metadata[MessageIDProperty])
	if err != nil {
		return c.reject(ctx, m, err)
	}
	asset, err := c.assets.lookup(ctx, r.DeviceID)
	if err != nil {
		return err
	}
	assetID := c.opts.UnassignedAsset
	if asset != nil {
		assetID = asset.AssetID
	}
	file, err := c.opts.Lake.Partition(r.TS, assetID)
	if err != nil {
		return err
	}
	id := rowID(r.DeviceID, r.ID)
	claim, err := c.opts.Dedup.Claim(ctx, dedupKey(r), file, matchRow(id))
	if err != nil {
		return err
	}
	defer claim.Release()
	if claim.Duplicate {
		c.counters.Duplicates.Add(1)
		c.log.Debug("duplicate skipped", "device", r.DeviceID, "id", r.ID, "reconciled", claim.Reconciled)
		return nil
	}
	last := c.last.get(ctx, r.DeviceID)
	row, err := buildRow(r, id, asset, assetID, last, m.Topic, c.opts.Lake.Replica(), c.opts.Now())
	if err != nil {
		return err
	}
	if err := claim.Check(); err != nil {
		return err
	}
	if err := c.opts.Lake.Write(file, row); err != nil {
		return err
	}
	// The row is durable: ack now. The record is marked done in the background; until then (or
	// for ever, after a crash) it is pending with this file, and a redelivery finds the row by
	// scanning and completes the record instead of writing again.
	if err := claim.CommitLater(ctx); err != nil {
		return err // the row is durable; the redelivery finds it and completes the record
	}
	c.counters.Written.Add(1)
	c.last.written(r)
	return nil
}

// HandleConfig applies one asset configuration (retained or live). An empty payload (a cleared
// retained message) is acked and ignored: mappings stay until replaced. An invalid one goes to the
// dead-letter topic.
func (c *Connector) HandleConfig(ctx context.Context, m Message) error {
	if len(m.Data) == 0 {
		c.log.Info("empty asset configuration ignored (retained message cleared)", "topic", m.Topic)
		return nil
	}
	_, topicAsset := matchTopic(c.opts.ConfigFilter, m.Topic)
	a, err := parseAsset(m.Data, topicAsset)
	if err != nil {
		if err := c.reject(ctx, m, err); err != nil {
			c.counters.Failed.Add(1)
			return err
		}
		return nil
	}
	if err := c.assets.apply(ctx, a); err != nil {
		c.counters.Failed.Add(1)
		return err
	}
	c.counters.Configs.Add(1)
	c.log.Info("asset configuration applied", "asset", a.AssetID, "devices", len(a.Devices))
	return nil
}

// reject sends m with the reason to the dead-letter topic; nil (ack) only once the publish was
// accepted. Any publish error, including a broker's 0x10 "no matching subscribers" that the
// pub/sub reports as an error (pubsub.mqttv5 with noMatchingSubscribers: fail; with accept, or a
// broker that answers 0x00 regardless, the rejected message is gone once acked), means "not
// rejected yet": the message is kept (a retriable error, redelivered) and the failure logged as an
// error, since it repeats until something subscribes to the dead-letter topic.
func (c *Connector) reject(ctx context.Context, m Message, reason error) error {
	data := deadLetter(m, reason, c.opts.Lake.Replica(), c.opts.Now())
	if err := c.opts.DeadLet.PublishDeadLetter(ctx, c.opts.DeadLetterTopic, data); err != nil {
		c.log.Error("rejected message NOT dead-lettered: kept for redelivery; is anything subscribed to the dead-letter topic?",
			"topic", m.Topic, "deadLetterTopic", c.opts.DeadLetterTopic, "reason", reason, "err", err)
		return errors.Join(fmt.Errorf("connector: dead-letter publish to %s failed", c.opts.DeadLetterTopic), err)
	}
	c.counters.Rejected.Add(1)
	c.log.Warn("message rejected to the dead-letter topic", "topic", m.Topic, "deadLetterTopic", c.opts.DeadLetterTopic, "reason", reason)
	return nil
}
