package broker

import (
	"context"
	"crypto/tls"
	"net"
	"strings"
	"time"
)

// AuthRequest is one step of authentication: the CONNECT itself, a continuing AUTH (0x18), or a
// re-authentication AUTH (0x19) on an open connection.
type AuthRequest struct {
	ClientID    string
	Username    string
	Password    []byte
	HasPassword bool
	// Method and Data are the Authentication Method and Data properties (enhanced authentication,
	// e.g. "K8S-SAT"); Method is empty for plain username/password.
	Method string
	Data   []byte
	// Reauth is true for AUTH 0x19 and the steps that follow it on an open connection.
	Reauth     bool
	RemoteAddr net.Addr
	// TLS is the connection's TLS state (its verified client certificate chains, if any); nil on a
	// plain TCP listener.
	TLS *tls.ConnectionState
	// State is what the previous step returned in AuthResponse.State (nil on the first step).
	State any
}

// AuthResponse is the Authenticator's verdict on a step that it did not refuse.
type AuthResponse struct {
	// Continue asks the client for another step (AUTH 0x18 carrying Data).
	Continue bool
	Data     []byte
	State    any
	// Identity, when not empty on the final step of a CONNECT, is who the client is for the
	// Authorizer and the session's owner (Client.Username) instead of the CONNECT's user name: the
	// identity of a client certificate, or of a token. On re-authentication it must be the
	// connection's identity (a token of another identity is refused with 0x87).
	Identity string
	// Expiry, when not zero on the final step, is when the credentials stop being valid (a token's
	// exp): the broker ends the connection then with DISCONNECT 0xA0 Maximum connect time unless a
	// re-authentication (AUTH 0x19) succeeded meanwhile, whose Expiry replaces it (zero: none). An
	// Expiry already past refuses the step with 0x87.
	Expiry time.Time
}

// Authenticator decides who may connect. Authenticate returning an error refuses the client: the
// CONNACK (or DISCONNECT for re-authentication) carries the *ReasonError's code, else 0x87 (or 0x86
// when a password was given without a method). It is called from the connection's goroutine and may
// block up to its ctx.
type Authenticator interface {
	Authenticate(ctx context.Context, req *AuthRequest) (AuthResponse, error)
}

// Client identifies an authenticated client to the Authorizer.
type Client struct {
	ID       string
	Username string
	// AuthState is the last AuthResponse.State of the client's authentication.
	AuthState any
}

// Authorizer decides publish and subscribe by topic. An error refuses: PUBACK/PUBREC or SUBACK carries
// the *ReasonError's code, else 0x87. AuthorizePublish is also asked, at CONNECT, for the topic of the
// client's will (the will is published on the client's behalf); refusing it refuses the connection
// with CONNACK carrying the code, else 0x87. It must not block for long: it runs on the client's
// goroutine.
type Authorizer interface {
	AuthorizePublish(ctx context.Context, c Client, topic string) error
	AuthorizeSubscribe(ctx context.Context, c Client, filter string) error
}

// LoopbackHost reports whether host (a name or an IP address, without a port) is this machine's
// loopback: "localhost", 127.0.0.0/8 or ::1.
func LoopbackHost(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
