package broker

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
)

// expiringAuth accepts the token "short" for 400ms as "ns/a"; re-authentication with "long" extends
// it by an hour, "other" is another identity's valid token, "past" an expired one.
type expiringAuth struct{}

func (expiringAuth) Authenticate(_ context.Context, r *AuthRequest) (AuthResponse, error) {
	switch string(r.Data) {
	case "short":
		return AuthResponse{Identity: "ns/a", Expiry: time.Now().Add(400 * time.Millisecond)}, nil
	case "long":
		return AuthResponse{Identity: "ns/a", Expiry: time.Now().Add(time.Hour)}, nil
	case "other":
		return AuthResponse{Identity: "ns/b", Expiry: time.Now().Add(time.Hour)}, nil
	case "past":
		return AuthResponse{Identity: "ns/a", Expiry: time.Now().Add(-time.Second)}, nil
	}
	return AuthResponse{}, errors.New("token refused")
}

func reauth(t *testing.T, c *client, token string) *paho.AuthResponse {
	t.Helper()
	resp, err := c.Authenticate(ctxT(t), &paho.Auth{ReasonCode: CodeReAuthenticate, Properties: &paho.AuthProperties{AuthMethod: "K8S-SAT", AuthData: []byte(token)}})
	require.NoError(t, err)
	return resp
}

func waitDisconnect(t *testing.T, c *client) *paho.Disconnect {
	t.Helper()
	select {
	case d := <-c.disc:
		return d
	case <-time.After(waitFor):
		t.Fatal("no DISCONNECT from the broker")
		return nil
	}
}

// MQTT v5 §3.14.2.1, §4.12.1: credentials that expire without re-authentication end the connection
// with DISCONNECT 0xA0 Maximum connect time, at their expiry and not before.
func TestAuthExpiryDisconnects(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.Authenticator = expiringAuth{} })
	start := time.Now()
	c := dialClient(t, b, "exp", withSAT("short"))
	d := waitDisconnect(t, c)
	require.Equal(t, CodeMaximumConnectTime, d.ReasonCode)
	require.GreaterOrEqual(t, time.Since(start), 350*time.Millisecond, "disconnected before the expiry")
	require.Equal(t, int64(1), b.Stats().RefusedByCode[CodeMaximumConnectTime])

	// Expired credentials are refused at CONNECT.
	c2, err := tryClient(t, b.Addrs()[0], "past", withSAT("past"))
	require.NoError(t, err)
	require.Equal(t, CodeNotAuthorized, c2.connack.ReasonCode)
}

// A re-authentication (AUTH 0x19) with fresh credentials moves the expiry: the connection outlives
// the first token and keeps delivering.
func TestAuthExpiryExtendedByReauth(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.Authenticator = expiringAuth{} })
	c := dialClient(t, b, "ext", withSAT("short"))
	c.subscribe(t, "t", 1)
	require.True(t, reauth(t, c, "long").Success)
	select {
	case d := <-c.disc:
		t.Fatalf("disconnected after re-authentication: reason 0x%02x", d.ReasonCode)
	case <-time.After(800 * time.Millisecond): // twice the first token's lifetime
	}
	c.publish(t, "t", 1, "still here")
	require.Equal(t, "still here", string(c.next(t).Payload))
}

// A re-authentication with another identity's token, or an expired one, ends the connection with
// DISCONNECT 0x87 Not authorized.
func TestAuthReauthOtherIdentityRefused(t *testing.T) {
	b := newBroker(t, func(o *Options) { o.Authenticator = expiringAuth{} })
	for _, token := range []string{"other", "past"} {
		c := dialClient(t, b, "id-"+token, withSAT("long"))
		resp := reauth(t, c, token)
		require.False(t, resp.Success, token)
		require.Equal(t, CodeNotAuthorized, resp.ReasonCode, token)
	}
}
