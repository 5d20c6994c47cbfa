package satauth

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/stretchr/testify/require"
)

func fileJWKS(t *testing.T, keys ...signingKey) (*JWKS, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "jwks.json")
	writeJWKS(t, path, keys...)
	j := &JWKS{Issuer: testIssuer, Audience: testAudience, File: path}
	require.NoError(t, j.Load(t.Context()))
	return j, path
}

// Each check of a token: a valid one names namespace/service account and its expiry; a forged
// signature, another issuer or audience, an expired token, one without exp and one that is not a
// service account's are refused (ErrRefused), and no error repeats the token.
func TestJWKSVerify(t *testing.T) {
	k := newKey(t, "k1")
	j, _ := fileJWKS(t, k)
	good := k.token(t, "tenant-a", "sensor", tokenOpts{exp: time.Now().Add(time.Hour)})
	id, err := j.Verify(t.Context(), good)
	require.NoError(t, err)
	require.Equal(t, "tenant-a/sensor", id.String())
	require.WithinDuration(t, time.Now().Add(time.Hour+DefaultLeeway), id.Expiry, 2*time.Second)

	forger := newKey(t, "k1") // same key id, another key
	for name, c := range map[string]struct {
		token, want string
	}{
		"forged":       {forger.token(t, "tenant-a", "sensor", tokenOpts{}), "signature does not verify"},
		"issuer":       {k.token(t, "tenant-a", "sensor", tokenOpts{iss: "https://evil.example"}), `issuer "https://evil.example"`},
		"audience":     {k.token(t, "tenant-a", "sensor", tokenOpts{aud: "kube-apiserver"}), `audience ["kube-apiserver"]`},
		"expired":      {k.token(t, "tenant-a", "sensor", tokenOpts{exp: time.Now().Add(-time.Minute)}), "expired"},
		"no exp":       {k.token(t, "tenant-a", "sensor", tokenOpts{noExp: true}), "no expiry"},
		"not an sa":    {k.token(t, "tenant-a", "sensor", tokenOpts{sub: "alice"}), "not a service account"},
		"sub mismatch": {k.token(t, "tenant-a", "sensor", tokenOpts{sub: "system:serviceaccount:tenant-b:sensor"}), "disagree"},
		"not a jwt":    {"not-a-token", "not a signed JWT"},
		"tampered":     {good[:strings.LastIndexByte(good, '.')] + ".AAAA", "signature"},
	} {
		_, err := j.Verify(t.Context(), c.token)
		require.ErrorIs(t, err, ErrRefused, name)
		require.ErrorContains(t, err, c.want, name)
		require.NotContains(t, err.Error(), c.token, name)
	}
}

// A token signed with a key id the set does not hold makes the verifier read the set again (a
// rotation), at most once per MinRefetch: within it, unknown key ids cost no read.
func TestJWKSRotation(t *testing.T) {
	k1, k2 := newKey(t, "k1"), newKey(t, "k2")
	j, path := fileJWKS(t, k1)
	j.MinRefetch = time.Hour
	writeJWKS(t, path, k1, k2) // rotated on disk
	tok2 := k2.token(t, "ns", "app", tokenOpts{})
	for range 5 {
		_, err := j.Verify(t.Context(), tok2)
		require.ErrorIs(t, err, ErrRefused)
		require.ErrorContains(t, err, `key id "k2"`)
	}
	require.Equal(t, int64(1), j.Fetches(), "rate limit: no read within MinRefetch")

	j2, path2 := fileJWKS(t, k1)
	j2.MinRefetch = time.Nanosecond
	writeJWKS(t, path2, k1, k2)
	id, err := j2.Verify(t.Context(), tok2)
	require.NoError(t, err)
	require.Equal(t, "ns/app", id.String())
	require.Equal(t, int64(2), j2.Fetches())
	_, err = j2.Verify(t.Context(), k1.token(t, "ns", "app", tokenOpts{}))
	require.NoError(t, err)
	require.Equal(t, int64(2), j2.Fetches(), "a known key id is not read again")
}

// Without a file or URL the keys come from the jwks_uri of the issuer's OpenID discovery document,
// over TLS; the document must name the issuer.
func TestJWKSDiscovery(t *testing.T) {
	k := newKey(t, "k1")
	var gets atomic.Int64
	var srv *httptest.Server
	srv = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gets.Add(1)
		switch r.URL.Path {
		case "/.well-known/openid-configuration":
			_ = json.NewEncoder(w).Encode(map[string]string{"issuer": srv.URL, "jwks_uri": srv.URL + "/openid/v1/jwks"})
		case "/openid/v1/jwks":
			_ = json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{k.public()}})
		default:
			http.NotFound(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	j := &JWKS{Issuer: srv.URL, Audience: testAudience, HTTPClient: srv.Client()}
	require.NoError(t, j.Load(t.Context()))
	require.Equal(t, int64(2), gets.Load())
	id, err := j.Verify(t.Context(), k.token(t, "ns", "app", tokenOpts{iss: srv.URL}))
	require.NoError(t, err)
	require.Equal(t, "ns/app", id.String())

	bad := &JWKS{Issuer: srv.URL + "/other", Audience: testAudience, HTTPClient: srv.Client()}
	require.ErrorContains(t, bad.Load(t.Context()), "404")
	url := &JWKS{Issuer: srv.URL, Audience: testAudience, URL: srv.URL + "/openid/v1/jwks", HTTPClient: srv.Client()}
	require.NoError(t, url.Load(t.Context()))

	require.NoError(t, CheckFetchURL("https://issuer.example/keys"))
	require.NoError(t, CheckFetchURL("http://127.0.0.1:8080/keys"))
	require.ErrorContains(t, CheckFetchURL("http://issuer.example/keys"), "want an https URL")
	require.ErrorContains(t, CheckFetchURL("keys.json"), "not an absolute URL")
}

// The key set unreadable is not a refusal of the token (ErrRefused) but an error: the client is
// told the server is unavailable, not that its token is bad.
func TestJWKSUnavailable(t *testing.T) {
	j := &JWKS{Issuer: testIssuer, Audience: testAudience, File: filepath.Join(t.TempDir(), "missing.json")}
	require.Error(t, j.Load(context.Background()))
	_, err := j.Verify(t.Context(), newKey(t, "k1").token(t, "ns", "app", tokenOpts{}))
	require.Error(t, err)
	require.False(t, errors.Is(err, ErrRefused), "%v", err)
}
