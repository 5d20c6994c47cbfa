// Package statestore is the broker-side engine of the key-value store protocol of the Azure IoT
// Operations MQTT broker (the "state store"), described in docs/state-store-protocol.md.
//
// The engine is pure and network-free: Handle takes one request PUBLISH (topic, payload, MQTT v5
// properties, QoS and the sender's client ID) and returns the response PUBLISH and the KEYNOTIFY
// notifications to send. It owns no goroutines and no timers: the embedding broker drives TTL expiry
// by calling Expire with the current time, at or after NextDeadline, and publishes what it returns.
// Handle also expires due keys first, so a key is never served past its deadline.
//
// The broker adapter is expected to be thin:
//
//	Match(topic)                   -> Engine.Match
//	Handle(ctx, clientID, msg, pub) -> Engine.Handle(ctx, Request{...}), then send each Message
//	connection end                 -> Engine.ConnectionClosed (docs/state-store-protocol.md#notifications)
//	timer at NextDeadline          -> Engine.Expire(now), then send the notifications
//
// A response goes to the subscribers of its topic; a notification (Message.ClientID set) goes to
// the connection that registered (Message.Conn) alone, whatever it subscribed to, and never through
// subscriptions: the AIO Go SDK does not subscribe to its notification topic.
//
// Handle returns an error, and no response, only for requests the protocol does not answer
// (wrong topic or QoS, missing or forbidden response topic, missing correlation data; see errors.go);
// for ErrForbiddenResponseTopic the broker disconnects the client
// (docs/state-store-protocol.md#topics). Every command error is an in-band `-ERR <text>` response
// with `__stat` 200 (docs/state-store-protocol.md#mqtt-properties, #responses).
//
// All methods are safe for concurrent use; one mutex serialises requests, which gives each command
// the atomicity the protocol implies (NX, NEX, VDEL, fencing checks).
package statestore
