package broker

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
)

// testCA is a certificate authority for the tests.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newTestCA(t testing.TB, name string) *testCA {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &testCA{cert: cert, key: key, pool: pool}
}

// issue signs a leaf certificate: a client certificate named cn (and dns), or a server one for
// 127.0.0.1.
func (ca *testCA) issue(t testing.TB, cn string, dns []string, server bool) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: cn}, DNSNames: dns,
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	if server {
		tmpl.ExtKeyUsage, tmpl.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, []net.IP{net.ParseIP("127.0.0.1")}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// tlsClient connects over TLS with cert (none when nil); err is the handshake's or CONNECT's.
func tlsClient(t *testing.T, addr string, ca *testCA, cert *tls.Certificate, id string, opts ...clientOpt) (*client, error) {
	t.Helper()
	cfg := &tls.Config{RootCAs: ca.pool, MinVersion: tls.VersionTLS12}
	if cert != nil {
		// Sent whatever CAs the server names (Go's client would otherwise leave out a
		// certificate the server's CA list does not cover).
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return cert, nil }
	}
	nc, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		return nil, err
	}
	if err := nc.Handshake(); err != nil {
		nc.Close()
		return nil, err
	}
	return clientOn(t, packets.NewThreadSafeConn(nc), id, opts...)
}

// X.509 client certificates (MQTT v5 §5.4.2, §5.4.1): a client whose certificate the listener
// verified is the certificate's identity for the ACL, whatever user name it claims; one from
// another CA fails the TLS handshake; in the optional mode a TLS client without a certificate
// authenticates with the password file (0x86 / 0x87 otherwise, §3.2.2.2).
func TestClientCertificates(t *testing.T) {
	ca, other := newTestCA(t, "mqdapr test CA"), newTestCA(t, "another CA")
	server := ca.issue(t, "broker", nil, true)
	dev1, dev2 := ca.issue(t, "device-1", nil, false), ca.issue(t, "", []string{"device-2.example"}, false)
	forged := other.issue(t, "device-1", nil, false)
	acl := NewACL(nil, aclFile(t, "all\ntopic readwrite devices/%u/#\n"), nil)
	b := newBroker(t, func(o *Options) {
		o.TLSAddr = "127.0.0.1:0"
		o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{server}, MinVersion: tls.VersionTLS12,
			ClientCAs: ca.pool, ClientAuth: tls.VerifyClientCertIfGiven}
		o.Authenticator = &CertAuth{Next: NewPasswordAuth(passwdFile(t, "alice", "a"), false)}
		o.Authorizer = acl
	})
	tlsAddr := b.Addrs()[1]

	c1, err := tlsClient(t, tlsAddr, ca, &dev1, "d1", withPassword("device-2.example", "claimed"))
	require.NoError(t, err)
	require.Equal(t, CodeSuccess, c1.connack.ReasonCode, "the certificate, not the claimed user name, decides")
	sa, err := c1.Subscribe(ctxT(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "devices/device-1/#", QoS: 1}, {Topic: "devices/device-2.example/#", QoS: 1}}})
	require.NotNil(t, sa, err)
	require.Equal(t, []byte{1, CodeNotAuthorized}, sa.Reasons, "identity device-1")
	c2, err := tlsClient(t, tlsAddr, ca, &dev2, "d2")
	require.NoError(t, err)
	require.Equal(t, CodeSuccess, c2.connack.ReasonCode)
	c2.subscribe(t, "devices/device-2.example/#", 1) // identity from the DNS SAN

	_, err = tlsClient(t, tlsAddr, ca, &forged, "forged")
	require.Error(t, err, "a certificate of another CA fails the handshake")

	c, err := tlsClient(t, tlsAddr, ca, nil, "pw", withPassword("alice", "a"))
	require.NoError(t, err)
	require.Equal(t, CodeSuccess, c.connack.ReasonCode, "optional: no certificate, the password file")
	c, err = tlsClient(t, tlsAddr, ca, nil, "anon")
	require.NoError(t, err)
	require.Equal(t, CodeNotAuthorized, c.connack.ReasonCode)
	c, err = tryClient(t, b.Addrs()[0], "plain", withPassword("device-1", "x"))
	require.NoError(t, err)
	require.Equal(t, CodeBadUserNameOrPassword, c.connack.ReasonCode, "on plain TCP a certificate name is no password")

	// require: a TLS client without a certificate does not get through the handshake.
	b2 := newBroker(t, func(o *Options) {
		o.Addr, o.TLSAddr = "", "127.0.0.1:0"
		o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{server}, MinVersion: tls.VersionTLS12,
			ClientCAs: ca.pool, ClientAuth: tls.RequireAndVerifyClientCert}
		o.Authenticator = &CertAuth{}
	})
	_, err = tlsClient(t, b2.Addrs()[0], ca, nil, "none")
	require.Error(t, err)
	c, err = tlsClient(t, b2.Addrs()[0], ca, &dev1, "d1")
	require.NoError(t, err)
	require.Equal(t, CodeSuccess, c.connack.ReasonCode)
}
