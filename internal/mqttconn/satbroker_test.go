package mqttconn

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/satauth"
)

// End to end with the broker's own K8S-SAT verifier (JWKS): the component's satAuthFile client
// connects with a service-account token, and when the token file is rotated (a new token, signed
// with the issuer's rotated key) it re-authenticates inside the open connection, which the broker
// accepts without a reconnect.
func TestSATAgainstBrokerJWKS(t *testing.T) {
	dir := t.TempDir()
	k1, k2 := newJWTKey(t, "k1"), newJWTKey(t, "k2")
	jwksFile := filepath.Join(dir, "jwks.json")
	writeKeySet(t, jwksFile, k1)
	v := &satauth.JWKS{Issuer: "https://issuer.test", Audience: "mqbroker", File: jwksFile, MinRefetch: time.Nanosecond}
	require.NoError(t, v.Load(t.Context()))
	url := startAuthBroker(t, &satauth.Authenticator{Verifier: v, Next: broker.NewPasswordAuth(nil, false)})

	tokenFile := filepath.Join(dir, "mqtt-client-token")
	require.NoError(t, os.WriteFile(tokenFile, []byte(k1.sign(t, "mqbroker")+"\n"), 0o600))
	s := DefaultSettings()
	s.URL, s.SATAuthFile, s.SATRefreshInterval, s.ClientID, s.ConnectTimeout = url, tokenFile, 100*time.Millisecond, "sat-e2e", 5*time.Second
	c, err := Dial(t.Context(), Options{Settings: s, Kind: KindPubSub})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(t.Context()) })

	writeKeySet(t, jwksFile, k1, k2)
	require.NoError(t, os.WriteFile(tokenFile, []byte(k2.sign(t, "mqbroker")), 0o600))
	require.Eventually(t, func() bool { return c.Reauthentications() == 1 }, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, uint64(1), c.Connects(), "re-authenticated without reconnecting")
	assert.True(t, c.Connected())

	// A token for another audience is refused at CONNECT: the client fails at once, naming 0x87.
	other := filepath.Join(dir, "other-token")
	require.NoError(t, os.WriteFile(other, []byte(k1.sign(t, "kube-apiserver")), 0o600))
	s2 := s
	s2.SATAuthFile, s2.ClientID = other, "sat-e2e-2"
	_, err = Dial(t.Context(), Options{Settings: s2, Kind: KindPubSub})
	require.ErrorContains(t, err, "reason 0x87 not authorized")
}

type jwtKey struct {
	kid  string
	priv *ecdsa.PrivateKey
}

func newJWTKey(t *testing.T, kid string) jwtKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return jwtKey{kid, k}
}

// sign issues a token for default/connector like a projected service-account token.
func (k jwtKey) sign(t *testing.T, aud string) string {
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.priv}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", k.kid))
	require.NoError(t, err)
	now := time.Now()
	s, err := jwt.Signed(sig).Claims(jwt.Claims{Issuer: "https://issuer.test", Audience: jwt.Audience{aud}, Subject: "system:serviceaccount:default:connector",
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Hour))}).Serialize()
	require.NoError(t, err)
	return s
}

func writeKeySet(t *testing.T, path string, keys ...jwtKey) {
	var set jose.JSONWebKeySet
	for _, k := range keys {
		set.Keys = append(set.Keys, jose.JSONWebKey{Key: &k.priv.PublicKey, KeyID: k.kid, Algorithm: "ES256", Use: "sig"})
	}
	raw, err := json.Marshal(set)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path+".tmp", raw, 0o600))
	require.NoError(t, os.Rename(path+".tmp", path))
}
