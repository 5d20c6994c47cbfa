package connector

import (
	"context"
	"fmt"
	"log/slog"
	"time"

	"github.com/mqdapr/mqdapr/app/dedup"
	"github.com/mqdapr/mqdapr/app/kv"
	"github.com/mqdapr/mqdapr/app/lake"
	"github.com/mqdapr/mqdapr/app/telemetry"
)

// Options configure a Connector.
type Options struct {
	// TelemetryFilter is the MQTT filter of device telemetry, e.g. "devices/+/telemetry"; the level
	// at its first + is the device id, which must equal the payload's deviceId.
	TelemetryFilter string
	// TelemetryPartitions is the number K of Dapr subscriptions the telemetry filter is spread over
	// by pubsub.mqttv5's partitioned subscriptions ("$partition/<i>of<K>/<filter>"): K handlers in
	// parallel through a daprd that dispatches one message at a time per subscription (1.16), so
	// their rows share fsyncs. 1 (or 0): one plain subscription, as a component without partitions
	// needs. At most MaxPartitions.
	TelemetryPartitions int
	// ConfigFilter is the MQTT filter of retained asset configuration, e.g. "config/assets/+"; the
	// level at its first + is the asset id.
	ConfigFilter string
	// DeadLetterTopic receives rejected messages with the reason.
	DeadLetterTopic string
	// UnassignedAsset is the asset partition of devices that no configuration names.
	UnassignedAsset string

	Store     kv.Store
	Lake      *lake.Lake
	Dedup     *dedup.Deduper
	DeadLet   DeadLetterPublisher
	Validator *telemetry.Validator
	Log       *slog.Logger
	Now       func() time.Time
	// AssetMissTTL is how long an unknown device is remembered as unassigned before the state
	// store is asked again. Default 10 s.
	AssetMissTTL time.Duration
}

// DeadLetterPublisher publishes data (JSON) to topic; it returns after the pub/sub acknowledged.
type DeadLetterPublisher interface {
	PublishDeadLetter(ctx context.Context, topic string, data []byte) error
}

func (o *Options) validate() error {
	if err := validFilter(o.TelemetryFilter); err != nil {
		return fmt.Errorf("%w: telemetry topic: %w", ErrInvalidOptions, err)
	}
	if o.TelemetryPartitions < 0 || o.TelemetryPartitions > MaxPartitions {
		return fmt.Errorf("%w: telemetry partitions %d; want 1…%d", ErrInvalidOptions, o.TelemetryPartitions, MaxPartitions)
	}
	if err := validFilter(o.ConfigFilter); err != nil {
		return fmt.Errorf("%w: config topic: %w", ErrInvalidOptions, err)
	}
	if o.DeadLetterTopic == "" {
		return fmt.Errorf("%w: empty dead-letter topic", ErrInvalidOptions)
	}
	if o.UnassignedAsset == "" {
		o.UnassignedAsset = "unassigned"
	}
	if !lake.ValidName(o.UnassignedAsset) {
		return fmt.Errorf("%w: unassigned asset name %q", ErrInvalidOptions, o.UnassignedAsset)
	}
	if o.Store == nil || o.Lake == nil || o.Dedup == nil || o.DeadLet == nil {
		return fmt.Errorf("%w: Store, Lake, Dedup and DeadLet are required", ErrInvalidOptions)
	}
	if o.Validator == nil {
		o.Validator = telemetry.NewValidator()
	}
	if o.Log == nil {
		o.Log = slog.Default()
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.AssetMissTTL <= 0 {
		o.AssetMissTTL = 10 * time.Second
	}
	return nil
}
