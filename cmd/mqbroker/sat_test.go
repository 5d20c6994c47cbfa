package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/broker/satauth"
)

// The -sat-* flags: bad combinations are refused naming what is missing or clashing; K8S-SAT
// counts as authentication for a listener off loopback; the config file has the same fields.
func TestSATFlags(t *testing.T) {
	dir := t.TempDir()
	jwksFile := filepath.Join(dir, "jwks.json")
	writeTestJWKS(t, jwksFile, newSATKey(t))
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"-sat-tokenreview"}, "K8S-SAT needs -sat-audience"},
		{[]string{"-sat-issuer", "https://issuer.example"}, "K8S-SAT needs -sat-audience"},
		{[]string{"-sat-audience", "mqbroker"}, "-sat-audience needs a way to verify tokens"},
		{[]string{"-sat-audience", "a", "-sat-tokenreview", "-sat-issuer", "https://i"}, "not both"},
		{[]string{"-sat-audience", "a", "-sat-jwks-file", jwksFile}, "need -sat-issuer"},
		{[]string{"-sat-audience", "a", "-sat-issuer", "https://i", "-sat-jwks-file", jwksFile, "-sat-jwks-url", "https://i/k"}, "not both"},
		{[]string{"-sat-audience", "a", "-sat-issuer", "https://i", "-sat-jwks-url", "http://issuer.example/keys"}, "want an https URL"},
		{[]string{"-sat-audience", "a", "-sat-issuer", "kubernetes/serviceaccount"}, "not an absolute URL"},
		{[]string{"-sat-audience", "a", "-sat-issuer", "https://i", "-sat-jwks-file", filepath.Join(dir, "none")}, "no such file"},
		{[]string{"-sat-audience", "a", "-sat-kubeconfig", filepath.Join(dir, "none")}, "kubeconfig"},
		{[]string{"-sat-audience", "a", "-sat-tokenreview"}, "in-cluster configuration"}, // not in a pod here
	} {
		err := run(append([]string{"-addr", "127.0.0.1:0", "-tls-addr", "", "-kv=false"}, c.args...))
		require.ErrorContains(t, err, c.want, "%q", c.args)
	}
	cfg, err := parseConfig([]string{"-addr", "0.0.0.0:0", "-sat-audience", "mqbroker", "-sat-issuer", "https://i", "-sat-jwks-file", jwksFile})
	require.NoError(t, err)
	s, err := setupAuth(cfg, []string{cfg.Addr}, nil)
	require.NoError(t, err, "K8S-SAT is authentication off loopback")
	require.IsType(t, &satauth.Authenticator{}, s.authenticator)

	f := filepath.Join(dir, "mqbroker.json")
	require.NoError(t, os.WriteFile(f, []byte(`{"sat_audience":"aud","sat_tokenreview":true,"sat_kubeconfig":"/k","sat_issuer":"https://i","sat_jwks_file":"/j","sat_jwks_url":"https://u"}`), 0o600))
	cfg, err = parseConfig([]string{"-config", f, "-sat-audience", "flag"})
	require.NoError(t, err)
	require.Equal(t, config{SATAudience: "flag", SATTokenReview: true, SATKubeconfig: "/k", SATIssuer: "https://i", SATJWKSFile: "/j", SATJWKSURL: "https://u"},
		config{SATAudience: cfg.SATAudience, SATTokenReview: cfg.SATTokenReview, SATKubeconfig: cfg.SATKubeconfig, SATIssuer: cfg.SATIssuer, SATJWKSFile: cfg.SATJWKSFile, SATJWKSURL: cfg.SATJWKSURL})
}

// mqbroker with -sat-issuer/-sat-jwks-file and an ACL by service account: a valid token gets in
// and only to its grants, a forged or wrong-audience one gets CONNACK 0x87, a password client 0x86
// (no password file: no user is known); the log says why and never holds a token.
func TestSATBrokerProcess(t *testing.T) {
	dir := t.TempDir()
	key := newSATKey(t)
	jwksFile, acl := filepath.Join(dir, "jwks.json"), filepath.Join(dir, "acl")
	writeTestJWKS(t, jwksFile, key)
	require.NoError(t, os.WriteFile(acl, []byte("user tenant-a/sensor\n  topic readwrite tenants/a/#\n"), 0o600))
	addr, _, lg := startAuthBroker(t, "-sat-audience", "mqbroker", "-sat-issuer", "https://issuer.test", "-sat-jwks-file", jwksFile, "-acl-file", acl)

	good := key.token(t, "https://issuer.test", "mqbroker", "tenant-a", "sensor")
	code, c := connectSAT(t, addr, "a1", good)
	require.Equal(t, byte(0x00), code)
	require.Equal(t, byte(1), subscribeCode(t, c, "tenants/a/#"))
	require.Equal(t, byte(0x87), subscribeCode(t, c, "tenants/b/#"))

	forged := newSATKey(t).token(t, "https://issuer.test", "mqbroker", "tenant-a", "sensor")
	code, _ = connectSAT(t, addr, "f1", forged)
	require.Equal(t, byte(0x87), code)
	wrongAud := key.token(t, "https://issuer.test", "kube-apiserver", "tenant-a", "sensor")
	code, _ = connectSAT(t, addr, "w1", wrongAud)
	require.Equal(t, byte(0x87), code)
	code, _ = connect(t, addr, "p1", "alice", "secret")
	require.Equal(t, byte(0x86), code)
	lg.waitCount(t, "authentication refused", 3)
	for _, tok := range []string{good, forged, wrongAud} {
		require.NotContains(t, lg.String(), tok)
		require.NotContains(t, lg.String(), tok[len(tok)-20:], "a piece of the token's signature")
	}
}

func connectSAT(t *testing.T, addr, id, token string) (byte, *paho.Client) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: nc, OnClientError: func(error) {}, AuthHandler: noChallenge{}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true,
		Properties: &paho.ConnectProperties{AuthMethod: satauth.Method, AuthData: []byte(token)}})
	require.NotNil(t, ca, err)
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{})
		nc.Close()
	})
	return ca.ReasonCode, c
}

// noChallenge is the client's AUTH handler (paho needs one for a CONNACK with a method); the
// broker never asks for more than the CONNECT's token here.
type noChallenge struct{}

func (noChallenge) Authenticate(*paho.Auth) *paho.Auth { return &paho.Auth{ReasonCode: 0x18} }
func (noChallenge) Authenticated()                     {}

type satKey struct{ priv *ecdsa.PrivateKey }

func newSATKey(t *testing.T) satKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	return satKey{k}
}

func (k satKey) token(t *testing.T, iss, aud, ns, sa string) string {
	sig, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: k.priv}, (&jose.SignerOptions{}).WithType("JWT").WithHeader("kid", "k1"))
	require.NoError(t, err)
	now := time.Now()
	s, err := jwt.Signed(sig).Claims(jwt.Claims{Issuer: iss, Audience: jwt.Audience{aud}, Subject: "system:serviceaccount:" + ns + ":" + sa,
		IssuedAt: jwt.NewNumericDate(now), NotBefore: jwt.NewNumericDate(now), Expiry: jwt.NewNumericDate(now.Add(time.Hour))}).Serialize()
	require.NoError(t, err)
	return s
}

func writeTestJWKS(t *testing.T, path string, k satKey) {
	raw, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &k.priv.PublicKey, KeyID: "k1", Algorithm: "ES256", Use: "sig"}}})
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(path, raw, 0o600))
}
