package telemetry

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"sort"
	"strconv"
	"time"
)

// Payload is the JSON a device publishes (raw, not a CloudEvent):
//
//	{"deviceId":"press-01","seq":42,"ts":"2026-11-27T07:00:00.123Z",
//	 "metrics":{"temperature":{"value":71.6,"unit":"F"},"pressure":{"value":101.3,"unit":"kPa"}}}
//
// ts is an RFC 3339 string or a number of milliseconds since the Unix epoch. seq is a non-negative
// integer that the device increments per message; it may be left out when the publisher sets the
// message-id user property instead.
type Payload struct {
	DeviceID string                 `json:"deviceId"`
	Seq      *json.Number           `json:"seq"`
	TS       json.RawMessage        `json:"ts"`
	Metrics  map[string]MetricInput `json:"metrics"`
}

// MetricInput is one measured value as the device sends it.
type MetricInput struct {
	Value *float64 `json:"value"`
	Unit  string   `json:"unit"`
}

// Metric is a normalised measured value, in its canonical unit.
type Metric struct {
	Value float64 `json:"value"`
	Unit  string  `json:"unit"`
}

// Reading is a validated, normalised telemetry message.
type Reading struct {
	DeviceID string
	// ID identifies the message within the device: "<seq>" or "m-<message-id>".
	ID string
	// Seq is the sequence number, -1 when the identity is a message-id.
	Seq     int64
	TS      time.Time // UTC
	Metrics map[string]Metric
}

// Limits of the accepted schema.
const (
	MaxPayloadBytes = 64 << 10
	MaxMetrics      = 64
	maxSeq          = 1<<53 - 1
)

var (
	deviceIDPattern   = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)
	metricNamePattern = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_]{0,63}$`)
	messageIDPattern  = regexp.MustCompile(`^[A-Za-z0-9._:-]{1,128}$`)
)

// Validator turns raw payloads into Readings. Now is the clock used to refuse timestamps from the
// future; MaxFutureSkew is how far ahead of it a device clock may be.
type Validator struct {
	Now           func() time.Time
	MaxFutureSkew time.Duration
}

// NewValidator returns a Validator on the wall clock that accepts device clocks up to 5 minutes
// ahead.
func NewValidator() *Validator {
	return &Validator{Now: time.Now, MaxFutureSkew: 5 * time.Minute}
}

// minTS is the earliest accepted timestamp: older ones are clock resets (1970) or garbage.
var minTS = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// Parse validates and normalises data. topicDevice is the device id taken from the MQTT topic (""
// when the topic carries none); messageID is the message-id user property ("" when absent). Every
// failure wraps ErrInvalid and names the field at fault.
func (v *Validator) Parse(data []byte, topicDevice, messageID string) (*Reading, error) {
	if len(data) > MaxPayloadBytes {
		return nil, fmt.Errorf("%w: payload is %d bytes; at most %d accepted", ErrInvalid, len(data), MaxPayloadBytes)
	}
	var p Payload
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: payload is not the telemetry JSON object {deviceId, seq, ts, metrics}: %w", ErrInvalid, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrInvalid)
	}
	if !deviceIDPattern.MatchString(p.DeviceID) {
		return nil, fmt.Errorf("%w: deviceId %q; want 1-64 characters of A-Z a-z 0-9 . _ - starting with a letter or digit", ErrInvalid, p.DeviceID)
	}
	if topicDevice != "" && topicDevice != p.DeviceID {
		return nil, fmt.Errorf("%w: deviceId %q differs from the device %q of the topic", ErrInvalid, p.DeviceID, topicDevice)
	}
	r := &Reading{DeviceID: p.DeviceID, Seq: -1}
	switch {
	case p.Seq != nil:
		seq, err := strconv.ParseInt(p.Seq.String(), 10, 64)
		if err != nil || seq < 0 || seq > maxSeq {
			return nil, fmt.Errorf("%w: seq %s; want an integer 0..2^53-1", ErrInvalid, p.Seq.String())
		}
		r.Seq, r.ID = seq, strconv.FormatInt(seq, 10)
	case messageID != "":
		if !messageIDPattern.MatchString(messageID) {
			return nil, fmt.Errorf("%w: message-id user property %q; want 1-128 characters of A-Z a-z 0-9 . _ : -", ErrInvalid, messageID)
		}
		r.ID = "m-" + messageID
	default:
		return nil, fmt.Errorf("%w: %w", ErrInvalid, ErrNoIdentity)
	}
	ts, err := v.parseTS(p.TS)
	if err != nil {
		return nil, err
	}
	r.TS = ts
	if len(p.Metrics) == 0 || len(p.Metrics) > MaxMetrics {
		return nil, fmt.Errorf("%w: metrics has %d entries; want 1..%d", ErrInvalid, len(p.Metrics), MaxMetrics)
	}
	r.Metrics = make(map[string]Metric, len(p.Metrics))
	for _, name := range sortedKeys(p.Metrics) {
		m, err := normaliseMetric(name, p.Metrics[name])
		if err != nil {
			return nil, err
		}
		r.Metrics[name] = m
	}
	return r, nil
}

func (v *Validator) parseTS(raw json.RawMessage) (time.Time, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return time.Time{}, fmt.Errorf("%w: ts is missing; want an RFC 3339 string or epoch milliseconds", ErrInvalid)
	}
	var ts time.Time
	switch raw[0] {
	case '"':
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return time.Time{}, fmt.Errorf("%w: ts: %w", ErrInvalid, err)
		}
		t, err := time.Parse(time.RFC3339Nano, s)
		if err != nil {
			return time.Time{}, fmt.Errorf("%w: ts %q is not RFC 3339 (e.g. 2026-11-27T07:00:00Z)", ErrInvalid, s)
		}
		ts = t
	default:
		ms, err := strconv.ParseInt(string(raw), 10, 64)
		if err != nil {
			return time.Time{}, fmt.Errorf("%w: ts %s; want an RFC 3339 string or integer epoch milliseconds", ErrInvalid, raw)
		}
		ts = time.UnixMilli(ms)
	}
	ts = ts.UTC()
	if ts.Before(minTS) {
		return time.Time{}, fmt.Errorf("%w: ts %s is before %s (device clock not set?)", ErrInvalid, ts.Format(time.RFC3339Nano), minTS.Format(time.RFC3339))
	}
	if limit := v.Now().Add(v.MaxFutureSkew); ts.After(limit) {
		return time.Time{}, fmt.Errorf("%w: ts %s is more than %s in the future", ErrInvalid, ts.Format(time.RFC3339Nano), v.MaxFutureSkew)
	}
	return ts, nil
}

func normaliseMetric(name string, in MetricInput) (Metric, error) {
	if !metricNamePattern.MatchString(name) {
		return Metric{}, fmt.Errorf("%w: metric name %q; want a letter then up to 63 of A-Z a-z 0-9 _", ErrInvalid, name)
	}
	if in.Value == nil {
		return Metric{}, fmt.Errorf("%w: metrics.%s.value is missing; want a number", ErrInvalid, name)
	}
	if math.IsNaN(*in.Value) || math.IsInf(*in.Value, 0) {
		return Metric{}, fmt.Errorf("%w: metrics.%s.value is not finite", ErrInvalid, name)
	}
	value, unit, err := Normalise(*in.Value, in.Unit)
	if err != nil {
		return Metric{}, fmt.Errorf("%w: metrics.%s: %w", ErrInvalid, name, err)
	}
	return Metric{Value: value, Unit: unit}, nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
