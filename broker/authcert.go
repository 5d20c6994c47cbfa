package broker

import (
	"context"
	"crypto/x509"
)

// CertAuth is an Authenticator for X.509 client certificates (mutual TLS): a client whose TLS
// connection presented a certificate the listener verified (tls.Config.ClientCAs, ClientAuth
// VerifyClientCertIfGiven or RequireAndVerifyClientCert) is the certificate's identity
// (CertIdentity), whatever user name or password its CONNECT carries; the Authorizer and the
// session's owner see that identity as Client.Username. A client without a verified certificate
// (plain TCP, or TLS without one in the optional mode) is passed to Next (the password file; nil
// refuses it with 0x87 Not authorized).
type CertAuth struct {
	Next Authenticator
}

// Authenticate implements Authenticator.
func (a *CertAuth) Authenticate(ctx context.Context, req *AuthRequest) (AuthResponse, error) {
	if req.TLS != nil && len(req.TLS.VerifiedChains) > 0 && len(req.TLS.VerifiedChains[0]) > 0 {
		if req.Method != "" {
			return AuthResponse{}, reasonf(CodeBadAuthenticationMethod, "authentication method %q with a client certificate: the certificate is the identity", req.Method)
		}
		id := CertIdentity(req.TLS.VerifiedChains[0][0])
		if id == "" {
			return AuthResponse{}, reasonf(CodeNotAuthorized, "the client certificate names no identity (subject common name, DNS or URI SAN)")
		}
		return AuthResponse{Identity: id}, nil
	}
	if a.Next == nil {
		return AuthResponse{}, reasonf(CodeNotAuthorized, "no verified client certificate")
	}
	return a.Next.Authenticate(ctx, req)
}

// CertIdentity is the identity of a client certificate: its subject common name, else its first
// DNS SAN, else its first URI SAN (e.g. a SPIFFE ID); "" when it has none of them.
func CertIdentity(cert *x509.Certificate) string {
	switch {
	case cert.Subject.CommonName != "":
		return cert.Subject.CommonName
	case len(cert.DNSNames) > 0:
		return cert.DNSNames[0]
	case len(cert.URIs) > 0:
		return cert.URIs[0].String()
	}
	return ""
}
