// Package kvservice plugs the key-value store engine (package broker/statestore, the protocol of
// docs/state-store-protocol.md) into the embedded MQTT broker as a broker.Service.
//
// The adapter is thin: a PUBLISH on the request topic becomes a statestore.Request, the engine's
// response is routed back through the broker's Publisher, each KEYNOTIFY notification is delivered
// to the connection that registered (broker.Deliverer) and to nobody else, and a timer goroutine
// owned by the Service calls Engine.Expire at Engine.NextDeadline so that keys with a TTL disappear
// (and their watchers are notified) even when no request arrives.
//
// Notifications: the AIO Go SDK (v0.4.1) never subscribes to its notification topic, yet receives
// notifications from the AIO broker (inferred: delivered to the registering connection), so one is sent
// once, at QoS 1, to the registering connection while it lasts, whether or not the client
// subscribed, and never through a subscription ('#' included). A client PUBLISH under the
// notification prefix is refused with PUBACK 0x87.
//
// Wiring, because the broker (the Publisher) does not exist when its Options are built:
//
//	svc, _ := kvservice.New(kvservice.Options{Engine: engine})
//	opts := broker.NewDefaultOptions()
//	opts.Services = []broker.Service{svc}
//	b, _ := broker.New(opts); _ = b.Start()
//	_ = svc.Start(b) // expiry timer
//	...
//	svc.Close(); b.Close(); engine.Close()
//
// Client disconnects: the Service implements broker.ConnectionObserver, so a KEYNOTIFY registration
// ends with the connection that made it (docs/state-store-protocol.md#notifications), takeover
// included, and only that one: a registration made on the client's next connection survives the old
// one's end however late it is reported.
package kvservice
