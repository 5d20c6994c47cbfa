package satauth

import (
	"context"
	"io"
	"log/slog"
	"net"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/broker"
)

// The tests below run the real broker on 127.0.0.1 with the K8S-SAT authenticator (and the ACL
// file's rules for the identities) and connect paho.golang clients over TCP.

const testACL = `
user tenant-a/sensor
  topic readwrite tenants/a/#
user tenant-b/sensor
  topic readwrite tenants/b/#
`

func startBroker(t *testing.T, v Verifier) string {
	t.Helper()
	af, err := broker.ParseACLFile("acl", []byte(testACL))
	require.NoError(t, err)
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	o := broker.NewDefaultOptions()
	o.Addr, o.Logger = "127.0.0.1:0", log
	o.Authenticator = &Authenticator{Verifier: v, Next: broker.NewPasswordAuth(nil, false)}
	o.Authorizer = broker.NewACL(nil, af, log)
	b, err := broker.New(o)
	require.NoError(t, err)
	require.NoError(t, b.Start())
	t.Cleanup(func() { _ = b.Close() })
	return b.Addrs()[0]
}

type mqttClient struct {
	*paho.Client
	connack *paho.Connack
	msgs    chan *paho.Publish
	disc    chan *paho.Disconnect
}

// tokenAnswer answers an AUTH continuation with the token (as internal/mqttconn's client does).
type tokenAnswer string

func (a tokenAnswer) Authenticate(*paho.Auth) *paho.Auth {
	return &paho.Auth{ReasonCode: broker.CodeContinueAuthentication, Properties: &paho.AuthProperties{AuthMethod: Method, AuthData: []byte(a)}}
}
func (tokenAnswer) Authenticated() {}

// connect sends CONNECT with the method and token (method "" for none); the CONNACK is returned
// whatever its code.
func connect(t *testing.T, addr, id, method, token string) *mqttClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	c := &mqttClient{msgs: make(chan *paho.Publish, 16), disc: make(chan *paho.Disconnect, 1)}
	c.Client = paho.NewClient(paho.ClientConfig{
		ClientID: id, Conn: nc, AuthHandler: tokenAnswer(token),
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.msgs <- pr.Packet
			return true, nil
		}},
		OnServerDisconnect: func(d *paho.Disconnect) { c.disc <- d },
	})
	cp := &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true, Properties: &paho.ConnectProperties{}}
	if method != "" {
		cp.Properties.AuthMethod, cp.Properties.AuthData = method, []byte(token)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	c.connack, err = c.Connect(ctx, cp)
	require.NotNil(t, c.connack, "no CONNACK: %v", err)
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{})
		nc.Close()
		<-c.Done()
	})
	return c
}

func (c *mqttClient) reauth(t *testing.T, token string) *paho.AuthResponse {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	resp, err := c.Authenticate(ctx, &paho.Auth{ReasonCode: broker.CodeReAuthenticate, Properties: &paho.AuthProperties{AuthMethod: Method, AuthData: []byte(token)}})
	require.NoError(t, err)
	return resp
}

func (c *mqttClient) suback(t *testing.T, filter string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	require.NotNil(t, sa, "%v", err)
	return sa.Reasons[0]
}

func (c *mqttClient) roundTrip(t *testing.T, topic string) {
	t.Helper()
	require.Equal(t, byte(1), c.suback(t, topic))
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	_, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("ping")})
	require.NoError(t, err)
	select {
	case m := <-c.msgs:
		require.Equal(t, "ping", string(m.Payload))
	case <-time.After(10 * time.Second):
		t.Fatal("no message back")
	}
}

func waitDisconnect(t *testing.T, c *mqttClient) *paho.Disconnect {
	t.Helper()
	select {
	case d := <-c.disc:
		return d
	case <-time.After(10 * time.Second):
		t.Fatal("no DISCONNECT from the broker")
		return nil
	}
}

// CONNECT with K8S-SAT verified against a JWKS: a valid token gets in as its service account and the
// ACL grants that identity its own tenant's topics only; a forged or expired token gets CONNACK
// 0x87, another method 0x8C, no method (anonymous) 0x87; a CONNECT carrying the method without a
// token is asked for it (AUTH 0x18) and gets in with the answer.
func TestSATConnectJWKS(t *testing.T) {
	k := newKey(t, "k1")
	j, _ := fileJWKS(t, k)
	addr := startBroker(t, j)

	a := connect(t, addr, "a1", Method, k.token(t, "tenant-a", "sensor", tokenOpts{}))
	require.Equal(t, broker.CodeSuccess, a.connack.ReasonCode)
	require.Equal(t, Method, a.connack.Properties.AuthMethod)
	a.roundTrip(t, "tenants/a/temp")
	require.Equal(t, broker.CodeNotAuthorized, a.suback(t, "tenants/b/#"), "tenant a must not read tenant b")
	require.Equal(t, broker.CodeNotAuthorized, a.suback(t, "#"))

	for name, c := range map[string]struct {
		method, token string
		code          byte
	}{
		"forged":  {Method, newKey(t, "k1").token(t, "tenant-a", "sensor", tokenOpts{}), broker.CodeNotAuthorized},
		"expired": {Method, k.token(t, "tenant-a", "sensor", tokenOpts{exp: time.Now().Add(-time.Hour)}), broker.CodeNotAuthorized},
		"method":  {"SCRAM-SHA-256", "x", broker.CodeBadAuthenticationMethod},
		"none":    {"", "", broker.CodeNotAuthorized},
	} {
		c2 := connect(t, addr, "bad-"+name, c.method, c.token)
		require.Equal(t, c.code, c2.connack.ReasonCode, name)
	}

	// Method without data: the broker asks, the client answers with its token.
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	cl := paho.NewClient(paho.ClientConfig{ClientID: "asked", Conn: nc, AuthHandler: tokenAnswer(k.token(t, "tenant-b", "sensor", tokenOpts{}))})
	ca, err := cl.Connect(t.Context(), &paho.Connect{ClientID: "asked", KeepAlive: 30, CleanStart: true, Properties: &paho.ConnectProperties{AuthMethod: Method}})
	require.NoError(t, err)
	require.Equal(t, broker.CodeSuccess, ca.ReasonCode)
	_ = cl.Disconnect(&paho.Disconnect{})
	<-cl.Done()
}

// A re-authentication (AUTH 0x19) with a rotated token keeps the connection past the first token's
// expiry; without one the connection ends at the expiry with DISCONNECT 0xA0 Maximum connect time;
// a re-authentication with a forged token, or another service account's, ends it with 0x87.
func TestSATReauthAndExpiry(t *testing.T) {
	k1, k2 := newKey(t, "k1"), newKey(t, "k2")
	j, path := fileJWKS(t, k1)
	j.Leeway, j.MinRefetch = time.Millisecond, time.Nanosecond
	addr := startBroker(t, j)
	short := func(k signingKey, ns string) string {
		return k.token(t, ns, "sensor", tokenOpts{exp: time.Now().Add(2 * time.Second)})
	}

	expiring := connect(t, addr, "expiring", Method, short(k1, "tenant-a"))
	require.Equal(t, broker.CodeSuccess, expiring.connack.ReasonCode)

	kept := connect(t, addr, "kept", Method, short(k1, "tenant-a"))
	require.Equal(t, broker.CodeSuccess, kept.connack.ReasonCode)
	writeJWKS(t, path, k1, k2) // the issuer rotated its key: the fresh token is signed with k2
	require.True(t, kept.reauth(t, k2.token(t, "tenant-a", "sensor", tokenOpts{})).Success)

	d := waitDisconnect(t, expiring)
	require.Equal(t, broker.CodeMaximumConnectTime, d.ReasonCode)
	select {
	case d := <-kept.disc:
		t.Fatalf("the re-authenticated connection was closed: 0x%02x", d.ReasonCode)
	case <-time.After(500 * time.Millisecond): // past the first token's expiry, which ended the other
	}
	kept.roundTrip(t, "tenants/a/still")

	forged := connect(t, addr, "forged", Method, k1.token(t, "tenant-a", "sensor", tokenOpts{}))
	resp := forged.reauth(t, newKey(t, "k1").token(t, "tenant-a", "sensor", tokenOpts{}))
	require.False(t, resp.Success)
	require.Equal(t, broker.CodeNotAuthorized, resp.ReasonCode)

	other := connect(t, addr, "other", Method, k1.token(t, "tenant-a", "sensor", tokenOpts{}))
	resp = other.reauth(t, k1.token(t, "tenant-b", "sensor", tokenOpts{}))
	require.False(t, resp.Success, "a re-authentication may not change the identity")
	require.Equal(t, broker.CodeNotAuthorized, resp.ReasonCode)
}

// CONNECT verified by TokenReview against the fake API server: valid, revoked (0x87), wrong
// audience (0x87), and the API server failing (0x88 Server unavailable: the client retries).
func TestSATConnectTokenReview(t *testing.T) {
	f := newFakeAPIServer(t)
	addr := startBroker(t, newTokenReview(t, f))
	f.valid("good", "tenant-b", "sensor")
	c := connect(t, addr, "b1", Method, "good")
	require.Equal(t, broker.CodeSuccess, c.connack.ReasonCode)
	c.roundTrip(t, "tenants/b/x")
	require.Equal(t, broker.CodeNotAuthorized, c.suback(t, "tenants/a/#"))

	f.set("boom", func(authv1Spec) (authv1Status, int) { return authv1Status{}, 500 })
	f.set("wrong-aud", func(authv1Spec) (authv1Status, int) {
		return authv1Status{Authenticated: true, Audiences: []string{"other"}, User: userInfo("system:serviceaccount:tenant-b:sensor")}, 201
	})
	for token, code := range map[string]byte{"revoked": broker.CodeNotAuthorized, "wrong-aud": broker.CodeNotAuthorized, "boom": broker.CodeServerUnavailable} {
		c := connect(t, addr, "x-"+token, Method, token)
		require.Equal(t, code, c.connack.ReasonCode, token)
	}
}
