package broker

import "context"

// A Service consumes publishes on the topics it matches, inside the broker (e.g. the key-value store).
type Service interface {
	Match(topic string) bool
	// Handle is called for each matching PUBLISH after authorization (HandleAsync instead when the
	// Service is an AsyncService); the publisher is acknowledged only after Handle returns nil (an
	// error is answered with PUBACK 0x80 unspecified error or the reason code carried by a
	// *ReasonError; a *DisconnectError disconnects the publisher instead).
	// Replies and notifications go out through pub, which is the *Broker and so also a Deliverer;
	// ConnectionOf(ctx) names the publisher's connection.
	Handle(ctx context.Context, clientID string, msg *Message, pub Publisher) error
}

// AsyncService is a Service that can finish a PUBLISH after HandleAsync returns, so that the
// broker goes on reading the publisher's next packets meanwhile (the key-value store holds an
// answer until its change is durable, and groups the fdatasyncs of many requests, several of one
// connection included; Receive Maximum still bounds how many are in flight). The broker calls
// HandleAsync instead of Handle. An error it returns ends the PUBLISH at once, as one from Handle
// does (a *DisconnectError disconnects the publisher); nil means done will be called exactly once,
// on any goroutine and possibly before HandleAsync returns, with what Handle would have returned
// (nil acknowledges the PUBLISH; a *DisconnectError counts as its ReasonError).
type AsyncService interface {
	Service
	HandleAsync(ctx context.Context, clientID string, msg *Message, pub Publisher, done func(error)) error
}

// DisconnectError, returned by Service.Handle, makes the broker disconnect the publisher with
// DISCONNECT carrying Code instead of acknowledging its PUBLISH (e.g. the state store's forbidden
// response topics).
type DisconnectError struct {
	ReasonError
}

// Publisher routes a message like a client publish. Publish returns once the message is queued for
// every matching subscriber (durably with a data directory); ErrQuotaExceeded when a queue is full.
type Publisher interface {
	Publish(ctx context.Context, msg *Message) error
}

// ClientObserver is implemented by a Service that keeps per-client state (the key-value store's
// KEYNOTIFY registrations): ClientDisconnected is called, outside the broker's lock, when a
// client's network connection ends (not when a new connection takes its session over). It may be
// reported after the client has connected again: state that belongs to one connection needs
// ConnectionObserver.
type ClientObserver interface {
	ClientDisconnected(clientID string)
}
