package broker

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"math/big"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
)

// testAuth accepts alice/secret, and K8S-SAT tokens "token-1"/"token-2"; the data "challenge-me" starts
// a two-step exchange answered with "nonce-signed". Re-authentication needs "token-2".
type testAuth struct{}

func (testAuth) Authenticate(_ context.Context, r *AuthRequest) (AuthResponse, error) {
	switch {
	case r.Method == "" && r.Username == "alice" && string(r.Password) == "secret":
		return AuthResponse{State: "alice"}, nil
	case r.Method == "":
		return AuthResponse{}, errors.New("bad credentials")
	case r.Method != "K8S-SAT":
		return AuthResponse{}, &ReasonError{Code: CodeBadAuthenticationMethod, Reason: "unknown method"}
	case r.Reauth && string(r.Data) == "token-2":
		return AuthResponse{State: "token-2"}, nil
	case r.Reauth:
		return AuthResponse{}, errors.New("token refused")
	case string(r.Data) == "challenge-me":
		return AuthResponse{Continue: true, Data: []byte("nonce"), State: "challenged"}, nil
	case r.State == "challenged" && string(r.Data) == "nonce-signed":
		return AuthResponse{State: "token-1"}, nil
	case string(r.Data) == "token-1":
		return AuthResponse{State: "token-1"}, nil
	}
	return AuthResponse{}, errors.New("token refused")
}

// testAuthz denies publishing under secret/ and subscribing under private/.
type testAuthz struct{}

func (testAuthz) AuthorizePublish(_ context.Context, _ Client, topic string) error {
	if strings.HasPrefix(topic, "secret/") {
		return errors.New("denied")
	}
	return nil
}

func (testAuthz) AuthorizeSubscribe(_ context.Context, _ Client, filter string) error {
	if strings.HasPrefix(filter, "private/") {
		return errors.New("denied")
	}
	return nil
}

type signer struct{}

func (signer) Authenticate(a *paho.Auth) *paho.Auth {
	return &paho.Auth{ReasonCode: CodeContinueAuthentication, Properties: &paho.AuthProperties{AuthMethod: "K8S-SAT", AuthData: []byte(string(a.Properties.AuthData) + "-signed")}}
}
func (signer) Authenticated() {}

func withPassword(user, pass string) clientOpt {
	return func(_ *paho.ClientConfig, c *paho.Connect) {
		c.Username, c.UsernameFlag, c.Password, c.PasswordFlag = user, true, []byte(pass), true
	}
}

func withSAT(data string) clientOpt {
	return func(cc *paho.ClientConfig, c *paho.Connect) {
		c.Properties.AuthMethod, c.Properties.AuthData = "K8S-SAT", []byte(data)
		cc.AuthHandler = signer{}
	}
}

// [MQTT-3.1.4-2] [MQTT-3.2.2-7]: the authentication hook decides CONNECT; a refusal is CONNACK 0x86
// for a bad password.
func TestPasswordAuthentication(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.Authenticator = testAuth{} })
	dialClient(t, b, "a", withPassword("alice", "secret"))
	c, err := tryClient(t, b.Addrs()[0], "b", withPassword("alice", "wrong"))
	require.NoError(t, err)
	require.Equal(t, CodeBadUserNameOrPassword, c.connack.ReasonCode)
	c, err = tryClient(t, b.Addrs()[0], "c")
	require.NoError(t, err)
	require.Equal(t, CodeNotAuthorized, c.connack.ReasonCode)
}

// [MQTT-4.12.0-1] [MQTT-4.12.0-2] [MQTT-4.12.1-1] [MQTT-4.12.1-2]: enhanced authentication (K8S-SAT) with a
// continue step, then re-authentication on the open connection (AUTH 0x19); a refused
// re-authentication disconnects with the hook's code.
func TestEnhancedAuthAndReauth(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.Authenticator = testAuth{} })
	c := dialClient(t, b, "sat", withSAT("challenge-me"))
	require.Equal(t, "K8S-SAT", c.connack.Properties.AuthMethod)
	c.subscribe(t, "t", 1)

	resp, err := c.Authenticate(ctxT(t), &paho.Auth{ReasonCode: CodeReAuthenticate, Properties: &paho.AuthProperties{AuthMethod: "K8S-SAT", AuthData: []byte("token-2")}})
	require.NoError(t, err)
	require.True(t, resp.Success)
	dialClient(t, b, "pub", withPassword("alice", "secret")).publish(t, "t", 1, "after reauth")
	require.Equal(t, "after reauth", string(c.next(t).Payload)) // the connection stayed open

	resp, err = c.Authenticate(ctxT(t), &paho.Auth{ReasonCode: CodeReAuthenticate, Properties: &paho.AuthProperties{AuthMethod: "K8S-SAT", AuthData: []byte("expired")}})
	require.NoError(t, err)
	require.False(t, resp.Success)
	require.Equal(t, CodeNotAuthorized, resp.ReasonCode)

	bad, err := tryClient(t, b.Addrs()[0], "other", func(cc *paho.ClientConfig, cp *paho.Connect) {
		cp.Properties.AuthMethod = "SCRAM"
		cc.AuthHandler = signer{}
	})
	require.NoError(t, err)
	require.Equal(t, CodeBadAuthenticationMethod, bad.connack.ReasonCode)
}

// [MQTT-3.3.5-2] [MQTT-3.8.4-?]: the authorization hook refuses publish (PUBACK 0x87) and subscribe
// (SUBACK 0x87) by topic.
func TestAuthorization(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.Authorizer = testAuthz{} })
	c := dialClient(t, b, "c")
	r, _ := c.Publish(ctxT(t), &paho.Publish{Topic: "secret/x", QoS: 1, Payload: []byte("x")})
	require.Equal(t, CodeNotAuthorized, r.ReasonCode)
	sa, _ := c.Subscribe(ctxT(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "private/x", QoS: 1}, {Topic: "public/x", QoS: 1}}})
	require.NotNil(t, sa)
	require.Equal(t, []byte{CodeNotAuthorized, 1}, sa.Reasons)
}

func selfSigned(t *testing.T) tls.Certificate {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "127.0.0.1"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}
}

// MQTT v5 over TLS (§4.2): the same protocol on a TLS listener.
func TestTLSListener(t *testing.T) {
	cert := selfSigned(t)
	b := newBroker(t, func(o *Options) {
		o.TLSAddr = "127.0.0.1:0"
		o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	})
	addrs := b.Addrs()
	require.Len(t, addrs, 2)
	pool := x509.NewCertPool()
	leaf, err := x509.ParseCertificate(cert.Certificate[0])
	require.NoError(t, err)
	pool.AddCert(leaf)
	nc, err := tls.Dial("tcp", addrs[1], &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
	require.NoError(t, err)
	// paho writes a packet in several Write calls on a non-TCP conn: serialise them, or concurrent
	// packets interleave (the broker then rightly closes with 0x81 malformed packet).
	c, err := clientOn(t, packets.NewThreadSafeConn(nc), "tls")
	require.NoError(t, err)
	require.Equal(t, CodeSuccess, c.connack.ReasonCode)
	c.subscribe(t, "t", 1)
	c.publish(t, "t", 1, "secure")
	require.Equal(t, "secure", string(c.next(t).Payload))
	c.none(t, b)
}
