package connector

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"time"
	"unicode/utf8"

	"github.com/mqdapr/mqdapr/app/dedup"
	"github.com/mqdapr/mqdapr/app/telemetry"
)

// Row is one line of the lake.
type Row struct {
	// ID is "<deviceId>/<seq>" or "<deviceId>/m-<message-id>": the message identity, unique per
	// row (readers may rely on it to check or deduplicate).
	ID         string                      `json:"id"`
	DeviceID   string                      `json:"deviceId"`
	Seq        *int64                      `json:"seq,omitempty"`
	TS         string                      `json:"ts"` // UTC RFC 3339 with nanoseconds
	AssetID    string                      `json:"assetId"`
	Site       string                      `json:"site,omitempty"`
	Line       string                      `json:"line,omitempty"`
	Attributes map[string]string           `json:"attributes,omitempty"`
	Metrics    map[string]telemetry.Metric `json:"metrics"`
	// Previous holds the last-known values of the device before this reading (from the state
	// store, shared by replicas), with their timestamp.
	Previous   map[string]telemetry.Metric `json:"previous,omitempty"`
	PreviousTS string                      `json:"previousTs,omitempty"`
	Topic      string                      `json:"topic"`
	ReceivedAt string                      `json:"receivedAt"`
	Replica    string                      `json:"replica"`
}

func rowID(device, id string) string { return device + "/" + id }

func dedupKey(r *telemetry.Reading) string { return dedup.Key(r.DeviceID, r.ID) }

// matchRow recognises the row of id in a lake line.
func matchRow(id string) func([]byte) bool {
	idJSON, _ := json.Marshal(id)
	needle := append([]byte(`"id":`), idJSON...)
	return func(line []byte) bool {
		if !bytes.Contains(line, needle) {
			return false
		}
		var r struct {
			ID string `json:"id"`
		}
		return json.Unmarshal(line, &r) == nil && r.ID == id
	}
}

func buildRow(r *telemetry.Reading, id string, asset *Asset, assetID string, last *lastKnown, topic, replica string, now time.Time) ([]byte, error) {
	row := Row{
		ID:         id,
		DeviceID:   r.DeviceID,
		TS:         r.TS.Format(time.RFC3339Nano),
		AssetID:    assetID,
		Metrics:    r.Metrics,
		Topic:      topic,
		ReceivedAt: now.UTC().Format(time.RFC3339Nano),
		Replica:    replica,
	}
	if r.Seq >= 0 {
		seq := r.Seq
		row.Seq = &seq
	}
	if asset != nil {
		row.Site, row.Line, row.Attributes = asset.Site, asset.Line, asset.Attributes
	}
	if last != nil {
		row.Previous, row.PreviousTS = last.Metrics, last.TS.Format(time.RFC3339Nano)
	}
	return json.Marshal(row)
}

// deadLetter renders a rejected message: the reason, where it came from, and the payload (as a
// string when it is UTF-8, else base64).
func deadLetter(m Message, reason error, replica string, now time.Time) []byte {
	dl := struct {
		Reason        string `json:"reason"`
		Topic         string `json:"topic"`
		Replica       string `json:"replica"`
		RejectedAt    string `json:"rejectedAt"`
		Payload       string `json:"payload,omitempty"`
		PayloadBase64 string `json:"payloadBase64,omitempty"`
	}{Reason: reason.Error(), Topic: m.Topic, Replica: replica, RejectedAt: now.UTC().Format(time.RFC3339Nano)}
	if utf8.Valid(m.Data) {
		dl.Payload = string(m.Data)
	} else {
		dl.PayloadBase64 = base64.StdEncoding.EncodeToString(m.Data)
	}
	b, _ := json.Marshal(dl)
	return b
}
