// Package satauth is the broker side of K8S-SAT enhanced authentication (MQTT v5 §4.12): a client
// puts a Kubernetes service-account token in the CONNECT's Authentication Data under the method
// "K8S-SAT", and the broker verifies it either with the Kubernetes TokenReview API (in a cluster:
// it also catches bound tokens revoked with their pod) or against the issuer's JSON Web Key Set
// (outside a cluster). The client's identity is "<namespace>/<service account>"; the connection
// ends with DISCONNECT 0xA0 when the token expires without a re-authentication (AUTH 0x19) carrying
// a fresh one. Tokens never appear in logs or errors.
package satauth

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"time"

	"github.com/mqdapr/mqdapr/broker"
)

// Method is the MQTT v5 Authentication Method of Kubernetes service-account tokens.
const Method = "K8S-SAT"

// ErrRefused wraps every verdict that a token is not valid (unauthenticated, revoked, forged,
// expired, wrong audience or issuer): the client is refused with 0x87 Not authorized. Any other
// error of a Verifier means it could not decide (API server or key set unreachable): 0x88 Server
// unavailable at CONNECT.
var ErrRefused = errors.New("service-account token refused")

// Identity is who a valid token names, and until when it is valid.
type Identity struct {
	Namespace      string
	ServiceAccount string
	// Expiry is when the token stops being valid (its exp), zero when it has none.
	Expiry time.Time
}

// String is the identity the broker's Authorizer sees: "<namespace>/<service account>".
func (id Identity) String() string { return id.Namespace + "/" + id.ServiceAccount }

// Verifier decides whether a token is valid. A refusal wraps ErrRefused; errors hold no token.
type Verifier interface {
	Verify(ctx context.Context, token string) (Identity, error)
}

// dnsLabel is a Kubernetes namespace name (RFC 1123 label); dnsSubdomain a service account name.
var (
	dnsLabel     = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$`)
	dnsSubdomain = regexp.MustCompile(`^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$`)
)

const saUserPrefix = "system:serviceaccount:"

// ParseUsername parses the Kubernetes user name of a service account,
// "system:serviceaccount:<namespace>:<name>" (the token's sub claim, TokenReview's status.user).
// The names are checked as Kubernetes does (a namespace is a DNS label, a service account a DNS
// subdomain), so an identity holds exactly one '/' and no MQTT wildcard.
func ParseUsername(user string) (Identity, error) {
	rest, ok := strings.CutPrefix(user, saUserPrefix)
	ns, sa, ok2 := strings.Cut(rest, ":")
	if !ok || !ok2 || !dnsLabel.MatchString(ns) || !dnsSubdomain.MatchString(sa) {
		return Identity{}, fmt.Errorf("%w: user %q is not a service account (want system:serviceaccount:<namespace>:<name>)", ErrRefused, user)
	}
	return Identity{Namespace: ns, ServiceAccount: sa}, nil
}

// Authenticator is a broker.Authenticator for the method K8S-SAT. Clients with another method, or
// none (user name and password, client certificates, anonymous), go to Next; with Next nil they are
// refused (0x8C Bad authentication method for another method, 0x87 without one).
type Authenticator struct {
	Verifier Verifier
	Next     broker.Authenticator
}

// askedForToken is the State of a CONNECT that carried the method without a token: the broker
// asks for it with AUTH 0x18 once.
type askedForToken struct{}

// Authenticate implements broker.Authenticator.
func (a *Authenticator) Authenticate(ctx context.Context, req *broker.AuthRequest) (broker.AuthResponse, error) {
	if req.Method != Method {
		if a.Next != nil {
			return a.Next.Authenticate(ctx, req)
		}
		if req.Method != "" {
			return broker.AuthResponse{}, &broker.ReasonError{Code: broker.CodeBadAuthenticationMethod,
				Reason: fmt.Sprintf("authentication method %q is not served (want %s with a service-account token)", req.Method, Method)}
		}
		return broker.AuthResponse{}, &broker.ReasonError{Code: broker.CodeNotAuthorized,
			Reason: "no authentication method: want " + Method + " with a service-account token in Authentication Data"}
	}
	if len(req.Data) == 0 {
		if _, asked := req.State.(askedForToken); !asked && !req.Reauth {
			return broker.AuthResponse{Continue: true, State: askedForToken{}}, nil
		}
		return broker.AuthResponse{}, &broker.ReasonError{Code: broker.CodeNotAuthorized, Reason: Method + " without a token in Authentication Data"}
	}
	id, err := a.Verifier.Verify(ctx, string(req.Data))
	if err != nil {
		code := broker.CodeNotAuthorized
		if !errors.Is(err, ErrRefused) {
			code = broker.CodeServerUnavailable // the client tries again later
			if req.Reauth {
				code = broker.CodeUnspecifiedError // 0x88 is not a DISCONNECT reason
			}
		}
		return broker.AuthResponse{}, &broker.ReasonError{Code: code, Reason: err.Error()}
	}
	return broker.AuthResponse{Identity: id.String(), Expiry: id.Expiry, State: id}, nil
}
