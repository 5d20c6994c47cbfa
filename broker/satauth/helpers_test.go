package satauth

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
	"github.com/stretchr/testify/require"
)

const (
	testIssuer   = "https://kubernetes.default.svc.cluster.local"
	testAudience = "mqbroker"
)

// signingKey is an issuer's key, made in the test.
type signingKey struct {
	kid  string
	priv *ecdsa.PrivateKey
}

func newKey(t *testing.T, kid string) signingKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return signingKey{kid: kid, priv: k}
}

func (k signingKey) public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: &k.priv.PublicKey, KeyID: k.kid, Algorithm: string(jose.ES256), Use: "sig"}
}

// tokenOpts are the claims of a test token; zero fields take the valid defaults.
type tokenOpts struct {
	iss, aud, sub string
	exp           time.Time
	noExp         bool
}

// token signs a service-account token for ns/sa like Kubernetes does.
func (k signingKey) token(t *testing.T, ns, sa string, o tokenOpts) string {
	t.Helper()
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.priv}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", k.kid))
	require.NoError(t, err)
	if o.iss == "" {
		o.iss = testIssuer
	}
	if o.aud == "" {
		o.aud = testAudience
	}
	if o.sub == "" {
		o.sub = "system:serviceaccount:" + ns + ":" + sa
	}
	if o.exp.IsZero() {
		o.exp = time.Now().Add(time.Hour)
	}
	now := time.Now()
	std := jwt.Claims{Issuer: o.iss, Audience: jwt.Audience{o.aud}, Subject: o.sub, IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now)}
	if !o.noExp {
		std.Expiry = jwt.NewNumericDate(o.exp)
	}
	priv := map[string]any{"kubernetes.io": map[string]any{"namespace": ns, "serviceaccount": map[string]any{"name": sa, "uid": "0f6d1c1e"}}}
	s, err := jwt.Signed(sig).Claims(std).Claims(priv).Serialize()
	require.NoError(t, err)
	return s
}

// writeJWKS writes the public keys as a JSON Web Key Set file (atomically, as a rotation would).
func writeJWKS(t *testing.T, path string, keys ...signingKey) {
	t.Helper()
	set := jose.JSONWebKeySet{}
	for _, k := range keys {
		set.Keys = append(set.Keys, k.public())
	}
	raw, err := json.Marshal(set)
	require.NoError(t, err)
	tmp := filepath.Join(filepath.Dir(path), ".jwks-tmp")
	require.NoError(t, os.WriteFile(tmp, raw, 0o600))
	require.NoError(t, os.Rename(tmp, path))
}
