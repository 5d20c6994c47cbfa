package statestore

import (
	"sort"

	"github.com/mqdapr/mqdapr/internal/hlc"
	"github.com/mqdapr/mqdapr/internal/resp3"
)

// notifySetPayload is `*4 NOTIFY SET VALUE <value>` (docs/state-store-protocol.md#notifications).
func notifySetPayload(value []byte) []byte {
	return resp3.EncodeArray([]byte("NOTIFY"), []byte("SET"), []byte("VALUE"), value)
}

// notifyDeletePayload is `*2 NOTIFY DELETE`, sent on DEL, VDEL and expiry
// (docs/state-store-protocol.md#notifications).
func notifyDeletePayload() []byte {
	return resp3.EncodeArray([]byte("NOTIFY"), []byte("DELETE"))
}

// notifications returns one notification per client watching key that Options.Authorize (when
// set) still lets read it, so that a read grant withdrawn since the KEYNOTIFY stops its
// notifications, in client ID order: QoS 1,
// content type application/octet-stream, user properties `__ts` = version and `__protVer` (spec
// docs/state-store-protocol.md#notifications). Each message has its own copy of payload.
func (e *Engine) notifications(key []byte, version hlc.HLC, payload []byte) []Message {
	clients := e.watchers[string(key)]
	if len(clients) == 0 {
		return nil
	}
	ids := make([]string, 0, len(clients))
	for id := range clients {
		if e.opts.Authorize != nil && !e.opts.Authorize(id, e.watchUser[id], key, AccessRead) {
			continue
		}
		ids = append(ids, id)
	}
	sort.Strings(ids)
	ts := version.String()
	out := make([]Message, 0, len(ids))
	for i, id := range ids {
		conn := clients[id]
		p := payload
		if i > 0 {
			p = append([]byte(nil), payload...)
		}
		out = append(out, Message{
			ClientID: id,
			Conn:     conn,
			Topic:    NotifyTopic(id, key),
			QoS:      1,
			Payload:  p,
			Properties: Properties{
				ContentType: ContentType,
				User:        []UserProperty{{PropTimestamp, ts}, {PropProtocolVersion, ProtocolVersion}},
			},
		})
	}
	return out
}

// watch registers (clientID, key) for connection conn; re-registering moves the registration to
// conn. It returns false when a new registration would exceed Options.MaxWatches.
func (e *Engine) watch(clientID, username string, conn uint64, key string) bool {
	if _, ok := e.watchers[key][clientID]; ok {
		e.watchers[key][clientID] = conn
		e.watchUser[clientID] = username
		return true
	}
	if e.opts.MaxWatches > 0 && e.watchCount >= e.opts.MaxWatches {
		return false
	}
	e.watchUser[clientID] = username // one user per client ID at a time (the broker refuses others)
	if e.watchers[key] == nil {
		e.watchers[key] = make(map[string]uint64)
	}
	e.watchers[key][clientID] = conn
	if e.clientKeys[clientID] == nil {
		e.clientKeys[clientID] = make(map[string]struct{})
	}
	e.clientKeys[clientID][key] = struct{}{}
	e.watchCount++
	return true
}

// unwatch removes (clientID, key) and reports whether it was registered.
func (e *Engine) unwatch(clientID, key string) bool {
	if _, ok := e.watchers[key][clientID]; !ok {
		return false
	}
	delete(e.watchers[key], clientID)
	if len(e.watchers[key]) == 0 {
		delete(e.watchers, key)
	}
	delete(e.clientKeys[clientID], key)
	if len(e.clientKeys[clientID]) == 0 {
		delete(e.clientKeys, clientID)
		delete(e.watchUser, clientID)
	}
	e.watchCount--
	return true
}

// ClientDisconnected drops every KEYNOTIFY registration of clientID, whichever connection made it
// (docs/state-store-protocol.md#notifications: registrations do not survive a disconnect, even with
// a persistent session).
func (e *Engine) ClientDisconnected(clientID string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for key := range e.clientKeys[clientID] {
		e.unwatch(clientID, key)
	}
}

// ConnectionClosed drops the KEYNOTIFY registrations that clientID made on connection conn
// (Request.Conn), and only those: a registration made since on a new connection of the same client
// survives, however late the end of the old one is reported. The broker calls it when a
// connection ends, takeover included.
func (e *Engine) ConnectionClosed(clientID string, conn uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for key := range e.clientKeys[clientID] {
		if e.watchers[key][clientID] == conn {
			e.unwatch(clientID, key)
		}
	}
}

// Watching reports whether clientID has a KEYNOTIFY registration for key.
func (e *Engine) Watching(clientID string, key []byte) bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	_, ok := e.watchers[string(key)][clientID]
	return ok
}
