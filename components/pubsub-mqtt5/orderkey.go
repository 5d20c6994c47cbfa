package pubsubmqtt5

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/eclipse/paho.golang/paho"
)

// Sources of the ordering key with ordering "key" (metadata orderingKeyFrom).
const (
	keyPayloadPrefix  = "payload:"  // a field of the JSON payload, by a dotted path
	keyPropertyPrefix = "property:" // an MQTT user property
)

// orderKey reads the ordering key of a received message: the messages with one key are handled
// one at a time in receive order, and a partitioned subscription hands every message of a key to
// the same partition while all of its partitions are open.
type orderKey struct {
	path     []string // payload:<a.b.c>: the field names from the top of the JSON payload
	property string   // property:<name>: the user property
}

// parseOrderingKey parses the orderingKeyFrom metadata.
func parseOrderingKey(s string) (orderKey, error) {
	want := fmt.Sprintf("want %s<JSON field path, e.g. deviceId or data.deviceId> or %s<MQTT user property name>", keyPayloadPrefix, keyPropertyPrefix)
	if p, ok := strings.CutPrefix(s, keyPayloadPrefix); ok {
		path := strings.Split(p, ".")
		for _, f := range path {
			if f == "" {
				return orderKey{}, fmt.Errorf("orderingKeyFrom=%q: empty field name in the path; %s", s, want)
			}
		}
		return orderKey{path: path}, nil
	}
	if p, ok := strings.CutPrefix(s, keyPropertyPrefix); ok && p != "" {
		return orderKey{property: p}, nil
	}
	return orderKey{}, fmt.Errorf("orderingKeyFrom=%q: %s", s, want)
}

// of returns the ordering key of pub; ok is false when pub does not carry it (the payload is not
// JSON, the field or property is missing).
func (k orderKey) of(pub *paho.Publish) (key string, ok bool) {
	if k.property != "" {
		if pub.Properties == nil {
			return "", false
		}
		for _, u := range pub.Properties.User {
			if u.Key == k.property {
				key, ok = u.Value, true // the last one wins, as in the received metadata
			}
		}
		return key, ok
	}
	raw := json.RawMessage(pub.Payload)
	for _, f := range k.path {
		var obj map[string]json.RawMessage
		if json.Unmarshal(raw, &obj) != nil {
			return "", false
		}
		if raw, ok = obj[f]; !ok {
			return "", false
		}
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s, true
	}
	return string(raw), true // a number, a boolean, an object: its JSON text
}
