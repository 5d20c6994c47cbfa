package kvservice

import (
	"context"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/statestore"
)

// Authenticator wraps next (nil: accept every client without an authentication method, as the
// broker does with no Authenticator) and adds nothing any more: KEYNOTIFY registrations belong to
// the connection that made them and end with it, takeover included (ConnectionClosed), so a
// CONNECT has nothing to drop. Dropping a client ID's registrations at CONNECT also dropped those
// of a live connection when the broker then refused the new CONNECT (e.g. 0x97, connection limit).
//
// Deprecated: pass next to the broker directly; kept so that existing wiring still compiles.
func (s *Service) Authenticator(next broker.Authenticator) broker.Authenticator {
	return &connectHook{next: next, svc: s}
}

type connectHook struct {
	next broker.Authenticator
	svc  *Service
}

// Authenticate delegates to the wrapped Authenticator, or refuses an authentication method when
// there is none (0x8C, as the broker does without an Authenticator).
func (h *connectHook) Authenticate(ctx context.Context, req *broker.AuthRequest) (broker.AuthResponse, error) {
	if h.next != nil {
		return h.next.Authenticate(ctx, req)
	}
	if req.Method != "" {
		return broker.AuthResponse{}, &broker.ReasonError{Code: broker.CodeBadAuthenticationMethod, Reason: "no authentication method is configured"}
	}
	return broker.AuthResponse{}, nil
}

// KeyAuthorizer is implemented by a broker.Authorizer that also decides key-level access to the
// key-value store (read: GET, KEYNOTIFY; write: SET, DEL, VDEL). It is called with the store's
// lock held: it must be quick and must not use the store.
type KeyAuthorizer interface {
	AuthorizeKey(c broker.Client, key []byte, access statestore.Access) error
}

// KeyAuthorization returns the engine's key-level authorization hook backed by the broker's
// authorization hook az, or nil (every key allowed) when az does not implement KeyAuthorizer.
// A refusal is answered `-ERR not authorized`.
func KeyAuthorization(az broker.Authorizer) statestore.Authorizer {
	ka, ok := az.(KeyAuthorizer)
	if !ok {
		return nil
	}
	return func(clientID string, key []byte, access statestore.Access) bool {
		return ka.AuthorizeKey(broker.Client{ID: clientID}, key, access) == nil
	}
}
