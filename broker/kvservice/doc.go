// Package kvservice plugs the key-value store engine (package broker/statestore, the protocol of
// /work/shared/spec/state-store-protocol.md) into the embedded MQTT broker as a broker.Service.
//
// The adapter is thin: a PUBLISH on the request topic becomes a statestore.Request, the engine's
// response and KEYNOTIFY notifications are routed back through the broker's Publisher, and a timer
// goroutine owned by the Service calls Engine.Expire at Engine.NextDeadline so that keys with a TTL
// disappear (and their watchers are notified) even when no request arrives.
//
// Wiring, because the broker (the Publisher) does not exist when its Options are built:
//
//	svc, _ := kvservice.New(kvservice.Options{Engine: engine})
//	opts := broker.NewDefaultOptions()
//	opts.Services = []broker.Service{svc}
//	opts.Authenticator = svc.Authenticator(opts.Authenticator) // drops KEYNOTIFY registrations on reconnect
//	b, _ := broker.New(opts); _ = b.Start()
//	_ = svc.Start(b) // expiry timer
//	...
//	svc.Close(); b.Close(); engine.Close()
//
// Client disconnects: the Service implements broker.ClientObserver, so a client's KEYNOTIFY
// registrations end with its connection (spec §1.7). A new connection that takes a live session
// over does not end the old one's registrations through that hook; the Authenticator wrapper drops
// them at every successful CONNECT of the client ID.
package kvservice
