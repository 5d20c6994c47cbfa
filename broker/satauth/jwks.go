package satauth

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"

	"github.com/mqdapr/mqdapr/broker"
)

// Defaults of JWKS.
const (
	DefaultMinRefetch = 10 * time.Second
	DefaultMaxAge     = time.Hour
	DefaultLeeway     = 10 * time.Second
)

// signatureAlgorithms are those accepted in a token's header (Kubernetes signs with RS256 or ES256).
var signatureAlgorithms = []jose.SignatureAlgorithm{jose.RS256, jose.RS384, jose.RS512, jose.PS256, jose.PS384, jose.PS512, jose.ES256, jose.ES384, jose.ES512, jose.EdDSA}

// JWKS verifies tokens as JSON Web Tokens signed by a key of the issuer's JSON Web Key Set, outside
// a cluster (or without the TokenReview permission): the signature, iss equal to Issuer, Audience
// in aud, exp present and not past, nbf and iat not in the future (each within Leeway), and sub a
// service account. It cannot know of a token revoked with its pod (TokenReview does).
//
// The key set is read from File, or fetched from URL, or, with both empty, from the jwks_uri of
// the issuer's OpenID discovery document (Issuer + "/.well-known/openid-configuration"). It is
// read again when a token names a key id it does not hold (a rotation), or when older than MaxAge,
// at most once per MinRefetch; a failed read keeps the keys held.
type JWKS struct {
	Issuer   string
	Audience string
	File     string
	URL      string
	// HTTPClient fetches URL and the discovery document (nil: one with a 10s timeout).
	HTTPClient *http.Client
	MinRefetch time.Duration // 0: DefaultMinRefetch
	MaxAge     time.Duration // 0: DefaultMaxAge
	Leeway     time.Duration // 0: DefaultLeeway

	fetchMu sync.Mutex // one read of the key set at a time
	mu      sync.Mutex
	keys    *jose.JSONWebKeySet
	loaded  time.Time // when keys were read
	tried   time.Time // last read attempt
	fetches int64
}

// Load reads the key set now (call it at start: a wrong file or URL is then an error at once).
func (j *JWKS) Load(ctx context.Context) error {
	j.fetchMu.Lock()
	defer j.fetchMu.Unlock()
	return j.load(ctx)
}

// Fetches returns how many times the key set was read.
func (j *JWKS) Fetches() int64 {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.fetches
}

func (j *JWKS) load(ctx context.Context) error {
	j.mu.Lock()
	j.tried = time.Now()
	j.fetches++
	j.mu.Unlock()
	set, err := j.read(ctx)
	if err != nil {
		return err
	}
	if len(set.Keys) == 0 {
		return fmt.Errorf("JWKS %s: no key in it", j.source())
	}
	for i, k := range set.Keys {
		if !k.Valid() {
			return fmt.Errorf("JWKS %s: key %d (kid %q) is not a valid key", j.source(), i, k.KeyID)
		}
		if !k.IsPublic() {
			set.Keys[i] = k.Public() // a private key given by mistake: only its public half is used
		}
	}
	j.mu.Lock()
	j.keys, j.loaded = set, time.Now()
	j.mu.Unlock()
	return nil
}

func (j *JWKS) source() string {
	switch {
	case j.File != "":
		return j.File
	case j.URL != "":
		return j.URL
	}
	return "from " + j.Issuer + "/.well-known/openid-configuration"
}

func (j *JWKS) read(ctx context.Context) (*jose.JSONWebKeySet, error) {
	var raw []byte
	var err error
	switch {
	case j.File != "":
		if raw, err = os.ReadFile(j.File); err != nil {
			return nil, fmt.Errorf("JWKS: %w", err)
		}
	case j.URL != "":
		if raw, err = j.get(ctx, j.URL); err != nil {
			return nil, err
		}
	default:
		doc, err := j.get(ctx, strings.TrimSuffix(j.Issuer, "/")+"/.well-known/openid-configuration")
		if err != nil {
			return nil, err
		}
		var d struct {
			Issuer  string `json:"issuer"`
			JWKSURI string `json:"jwks_uri"`
		}
		if err := json.Unmarshal(doc, &d); err != nil || d.JWKSURI == "" {
			return nil, fmt.Errorf("JWKS: the OpenID discovery document of %s has no jwks_uri (%v)", j.Issuer, err)
		}
		if d.Issuer != j.Issuer {
			return nil, fmt.Errorf("JWKS: the OpenID discovery document names the issuer %q, want %q", d.Issuer, j.Issuer)
		}
		if err := CheckFetchURL(d.JWKSURI); err != nil {
			return nil, fmt.Errorf("JWKS: jwks_uri: %w", err)
		}
		if raw, err = j.get(ctx, d.JWKSURI); err != nil {
			return nil, err
		}
	}
	var set jose.JSONWebKeySet
	if err := json.Unmarshal(raw, &set); err != nil {
		return nil, fmt.Errorf("JWKS %s: not a JSON Web Key Set (RFC 7517 {\"keys\": [...]}): %w", j.source(), err)
	}
	return &set, nil
}

func (j *JWKS) get(ctx context.Context, u string) ([]byte, error) {
	hc := j.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: 10 * time.Second}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	req.Header.Set("Accept", "application/json")
	resp, err := hc.Do(req)
	if err != nil {
		return nil, fmt.Errorf("JWKS: %w", err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return nil, fmt.Errorf("JWKS: GET %s: %w", u, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("JWKS: GET %s: %s", u, resp.Status)
	}
	return body, nil
}

// CheckFetchURL accepts an https URL, or http to a loopback host (a local test issuer).
func CheckFetchURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL (want https://host/path)", raw)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if broker.LoopbackHost(u.Hostname()) {
			return nil
		}
	}
	return fmt.Errorf("%q: want an https URL (http only to a loopback host): keys fetched in clear could be replaced", raw)
}

// keysFor returns the keys a token with key id kid may be signed with, reading the set again
// (within MinRefetch) when it holds none for kid or is older than MaxAge.
func (j *JWKS) keysFor(ctx context.Context, kid string) []jose.JSONWebKey {
	if ks := j.lookup(kid, false); ks != nil {
		return ks
	}
	j.fetchMu.Lock()
	defer j.fetchMu.Unlock()
	if ks := j.lookup(kid, false); ks != nil {
		return ks // read meanwhile by another verification
	}
	j.mu.Lock()
	minRefetch := j.MinRefetch
	if minRefetch == 0 {
		minRefetch = DefaultMinRefetch
	}
	due := time.Since(j.tried) >= minRefetch
	j.mu.Unlock()
	if due {
		_ = j.load(ctx) // on failure the keys held stay; the token is judged against them
	}
	return j.lookup(kid, true)
}

// lookup returns the keys held for kid (all of them for a token without kid); nil when there are
// none, or, unless stale is accepted, when the set is older than MaxAge.
func (j *JWKS) lookup(kid string, stale bool) []jose.JSONWebKey {
	j.mu.Lock()
	defer j.mu.Unlock()
	maxAge := j.MaxAge
	if maxAge == 0 {
		maxAge = DefaultMaxAge
	}
	if j.keys == nil || (!stale && time.Since(j.loaded) > maxAge) {
		return nil
	}
	if kid == "" {
		return j.keys.Keys
	}
	ks := j.keys.Key(kid)
	if len(ks) == 0 {
		return nil
	}
	return ks
}

// k8sClaims is the private claim Kubernetes puts in service-account tokens.
type k8sClaims struct {
	Kubernetes *struct {
		Namespace      string `json:"namespace"`
		ServiceAccount struct {
			Name string `json:"name"`
		} `json:"serviceaccount"`
	} `json:"kubernetes.io"`
}

// Verify implements Verifier.
func (j *JWKS) Verify(ctx context.Context, token string) (Identity, error) {
	tok, err := jwt.ParseSigned(token, signatureAlgorithms)
	if err != nil {
		return Identity{}, fmt.Errorf("%w: not a signed JWT with an accepted algorithm (%s): %v", ErrRefused, "RS*, PS*, ES*, EdDSA", errors.Unwrap(err))
	}
	if len(tok.Headers) != 1 {
		return Identity{}, fmt.Errorf("%w: want one signature, got %d", ErrRefused, len(tok.Headers))
	}
	kid := tok.Headers[0].KeyID
	keys := j.keysFor(ctx, kid)
	if len(keys) == 0 {
		j.mu.Lock()
		loaded := j.keys != nil
		j.mu.Unlock()
		if !loaded {
			return Identity{}, fmt.Errorf("JWKS %s: no key set could be read", j.source())
		}
		return Identity{}, fmt.Errorf("%w: signed with key id %q, which the issuer's key set does not hold", ErrRefused, kid)
	}
	var std jwt.Claims
	var k8s k8sClaims
	verified := false
	for _, k := range keys {
		if k.Use != "" && k.Use != "sig" {
			continue
		}
		if err := tok.Claims(k, &std, &k8s); err == nil {
			verified = true
			break
		}
	}
	if !verified {
		return Identity{}, fmt.Errorf("%w: the signature does not verify with the issuer's key (key id %q)", ErrRefused, kid)
	}
	leeway := j.Leeway
	if leeway == 0 {
		leeway = DefaultLeeway
	}
	if std.Expiry == nil {
		return Identity{}, fmt.Errorf("%w: the token has no expiry (exp); want a bound (projected) service-account token", ErrRefused)
	}
	if err := std.ValidateWithLeeway(jwt.Expected{Issuer: j.Issuer, AnyAudience: jwt.Audience{j.Audience}, Time: time.Now()}, leeway); err != nil {
		switch {
		case errors.Is(err, jwt.ErrInvalidIssuer):
			err = fmt.Errorf("issuer %q, want %q", std.Issuer, j.Issuer)
		case errors.Is(err, jwt.ErrInvalidAudience):
			err = fmt.Errorf("audience %q, want %q", []string(std.Audience), j.Audience)
		}
		return Identity{}, fmt.Errorf("%w: %v", ErrRefused, err)
	}
	id, err := ParseUsername(std.Subject)
	if err != nil {
		return Identity{}, err
	}
	if kc := k8s.Kubernetes; kc != nil && (kc.Namespace != id.Namespace || kc.ServiceAccount.Name != id.ServiceAccount) {
		return Identity{}, fmt.Errorf("%w: sub %q and the kubernetes.io claim (%s/%s) disagree", ErrRefused, std.Subject, kc.Namespace, kc.ServiceAccount.Name)
	}
	id.Expiry = std.Expiry.Time().Add(leeway)
	return id, nil
}
