package kvservice

import (
	"context"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/statestore"
)

// Authenticator wraps next (nil: accept every client without an authentication method, as the
// broker does with no Authenticator) so that each successful CONNECT of a client ID drops the
// KEYNOTIFY registrations left by that client ID's previous connection (spec §1.7), which covers
// a session takeover (ClientDisconnected covers ordinary disconnects).
func (s *Service) Authenticator(next broker.Authenticator) broker.Authenticator {
	return &connectHook{next: next, svc: s}
}

type connectHook struct {
	next broker.Authenticator
	svc  *Service
}

// Authenticate delegates to the wrapped Authenticator and, once a CONNECT (not a re-authentication)
// has succeeded, calls Engine.ClientDisconnected for its client ID.
func (h *connectHook) Authenticate(ctx context.Context, req *broker.AuthRequest) (broker.AuthResponse, error) {
	var resp broker.AuthResponse
	if h.next != nil {
		var err error
		if resp, err = h.next.Authenticate(ctx, req); err != nil {
			return resp, err
		}
	} else if req.Method != "" {
		return resp, &broker.ReasonError{Code: broker.CodeBadAuthenticationMethod, Reason: "no authentication method is configured"}
	}
	if !resp.Continue && !req.Reauth {
		h.svc.engine.ClientDisconnected(req.ClientID)
	}
	return resp, nil
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
