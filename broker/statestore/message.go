package statestore

import (
	"encoding/hex"
	"strings"
)

// Topics and fixed property values of the current protocol version
// (docs/state-store-protocol.md#topics, #mqtt-properties).
const (
	// RequestTopic is where clients publish requests; the broker is implicitly subscribed.
	RequestTopic = "statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke"
	// NotifyTopicPrefix starts every notification topic; no response topic may start with it.
	NotifyTopicPrefix = "clients/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8"
	// ContentType is set on every response and notification.
	ContentType = "application/octet-stream"
	// ProtocolVersion is sent as `__protVer` on every response and notification.
	ProtocolVersion = "1.0"
	// supportedMajor is the only request protocol major version served.
	supportedMajor = "1"
)

// User property names (docs/state-store-protocol.md#mqtt-properties).
const (
	PropTimestamp       = "__ts"
	PropFencingToken    = "__ft"
	PropStatus          = "__stat"
	PropProtocolVersion = "__protVer"
	PropStatusMessage   = "__stMsg"
	PropSupportedMajor  = "__supProtMajVer"
	PropRequestProtVer  = "__requestProtVer"
	PropPersistence     = "aio-persistence"
)

// UserProperty is one MQTT v5 user property; requests may repeat keys, so properties are kept as
// ordered pairs.
type UserProperty struct {
	Key, Value string
}

// Properties are the MQTT v5 PUBLISH properties the protocol uses.
type Properties struct {
	// ResponseTopic is the Response Topic property (requests only).
	ResponseTopic string
	// CorrelationData is the Correlation Data property; echoed on the response.
	CorrelationData []byte
	// ContentType is the Content Type property.
	ContentType string
	// User holds the user properties in wire order.
	User []UserProperty
}

// Get returns the value of the first user property named key.
func (p Properties) Get(key string) (string, bool) {
	for _, u := range p.User {
		if u.Key == key {
			return u.Value, true
		}
	}
	return "", false
}

// Request is one incoming PUBLISH to RequestTopic.
type Request struct {
	// ClientID is the MQTT client ID of the sender; KEYNOTIFY registrations are keyed by it.
	ClientID string
	// Username is the sender's user name (empty when anonymous), for the Authorizer.
	Username string
	// Conn identifies the sender's network connection (the broker's ConnID; 0 when unknown). A
	// KEYNOTIFY registration belongs to it: ConnectionClosed with the same value ends it, and its
	// notifications carry it.
	Conn uint64
	// Topic is the PUBLISH topic.
	Topic string
	// QoS is the PUBLISH QoS; the protocol requires 1.
	QoS byte
	// Payload is the RESP3 request array. The engine copies what it keeps.
	Payload []byte
	// Properties are the PUBLISH properties.
	Properties Properties
}

// Message is one PUBLISH the broker must send: a response or a notification.
type Message struct {
	// ClientID and Conn are set on a notification only: the client, and the connection of its
	// KEYNOTIFY, that alone must receive it, whatever it subscribed to
	// (docs/state-store-protocol.md#notifications). Responses go to their topic's subscribers.
	ClientID   string
	Conn       uint64
	Topic      string
	QoS        byte
	Payload    []byte
	Properties Properties
}

// Result is what one request produces: the response to publish to the request's response topic and
// the notifications (to KEYNOTIFY watchers, including those caused by keys expiring before the
// request was served). Publish the notifications after the response.
type Result struct {
	Response      Message
	Notifications []Message
}

// NotifyTopic returns the topic on which clientID receives notifications for key:
// `clients/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/{HEX(clientId)}/command/notify/{HEX(key)}`
// with upper-case hexadecimal (docs/state-store-protocol.md#topics).
func NotifyTopic(clientID string, key []byte) string {
	var b strings.Builder
	b.Grow(len(NotifyTopicPrefix) + 2*len(clientID) + len("/command/notify/") + 2*len(key) + 1)
	b.WriteString(NotifyTopicPrefix)
	b.WriteByte('/')
	b.WriteString(strings.ToUpper(hex.EncodeToString([]byte(clientID))))
	b.WriteString("/command/notify/")
	b.WriteString(strings.ToUpper(hex.EncodeToString(key)))
	return b.String()
}
