package kvservice

import (
	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/statestore"
)

// KeyAuthorizer is implemented by a broker.Authorizer that also decides key-level access to the
// key-value store (read: GET, KEYNOTIFY; write: SET, DEL, VDEL). It is called with the store's
// lock held: it must be quick and must not use the store.
type KeyAuthorizer interface {
	AuthorizeKey(c broker.Client, key []byte, write bool) error
}

// KeyAuthorization returns the engine's key-level authorization hook backed by the broker's
// authorization hook az, or nil (every key allowed) when az does not implement KeyAuthorizer.
// A refusal is answered `-ERR not authorized`.
func KeyAuthorization(az broker.Authorizer) statestore.Authorizer {
	ka, ok := az.(KeyAuthorizer)
	if !ok {
		return nil
	}
	return func(clientID, username string, key []byte, access statestore.Access) bool {
		return ka.AuthorizeKey(broker.Client{ID: clientID, Username: username}, key, access == statestore.AccessWrite) == nil
	}
}
