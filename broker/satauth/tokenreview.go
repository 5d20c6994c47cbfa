package satauth

import (
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	authv1client "k8s.io/client-go/kubernetes/typed/authentication/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Defaults of TokenReview's cache.
const (
	DefaultCacheTTL  = 10 * time.Second
	DefaultCacheSize = 4096
)

// NewTokenReviewClient returns the TokenReview client of the cluster: from the pod's in-cluster
// configuration when kubeconfig is empty, else from that kubeconfig file (its current context).
// The broker's service account needs the permission to create tokenreviews (the ClusterRole
// system:auth-delegator grants it).
func NewTokenReviewClient(kubeconfig string) (authv1client.TokenReviewInterface, error) {
	var cfg *rest.Config
	var err error
	if kubeconfig == "" {
		if cfg, err = rest.InClusterConfig(); err != nil {
			return nil, fmt.Errorf("TokenReview: in-cluster configuration: %w (outside a pod, give a kubeconfig file)", err)
		}
	} else if cfg, err = clientcmd.BuildConfigFromFlags("", kubeconfig); err != nil {
		return nil, fmt.Errorf("TokenReview: kubeconfig %s: %w", kubeconfig, err)
	}
	cfg.Timeout = 10 * time.Second
	// client-go's default (5 per second, bursts of 10) would queue a reconnection storm of
	// distinct tokens past the clients' connect timeout; the API server's own flow control still
	// applies.
	cfg.QPS, cfg.Burst = 50, 100
	cfg.UserAgent = "mqbroker"
	// JSON rather than client-go's protobuf default for built-in types: every API server takes it.
	cfg.ContentType, cfg.AcceptContentTypes = "application/json", "application/json"
	c, err := authv1client.NewForConfig(cfg)
	if err != nil {
		return nil, fmt.Errorf("TokenReview: %w", err)
	}
	return c.TokenReviews(), nil
}

// TokenReview verifies tokens with the Kubernetes TokenReview API (authentication.k8s.io/v1): the
// API server must answer status.authenticated, with Audience among status.audiences (an API server
// that ignores audiences answers none, and is refused), for a service-account user. The expiry is
// the token's exp claim, read without verification once the API server vouched for the token.
//
// Verdicts (valid or refused, not errors) are cached by the token's SHA-256 for CacheTTL (never past
// the token's expiry), at most CacheSize of them, and clients presenting one token at once share
// one TokenReview, so that a storm of reconnections does not become a storm of TokenReviews; a
// token revoked with its pod is therefore refused at most CacheTTL late.
type TokenReview struct {
	Client    authv1client.TokenReviewInterface
	Audience  string
	CacheTTL  time.Duration // 0: DefaultCacheTTL; negative: no cache
	CacheSize int           // 0: DefaultCacheSize

	inflight singleflight.Group // by token hash: one TokenReview for concurrent clients
	mu       sync.Mutex
	cache    map[[sha256.Size]byte]verdict
	reviews  int64 // TokenReviews sent
}

type verdict struct {
	id    Identity
	err   error
	until time.Time
}

// Reviews returns how many TokenReviews were sent to the API server.
func (v *TokenReview) Reviews() int64 {
	v.mu.Lock()
	defer v.mu.Unlock()
	return v.reviews
}

// Verify implements Verifier.
func (v *TokenReview) Verify(ctx context.Context, token string) (Identity, error) {
	key := sha256.Sum256([]byte(token))
	if e, ok := v.cached(key); ok {
		return e.id, e.err
	}
	res, _, _ := v.inflight.Do(string(key[:]), func() (any, error) {
		if e, ok := v.cached(key); ok { // answered while this caller was arriving
			return e, nil
		}
		v.mu.Lock()
		v.reviews++
		v.mu.Unlock()
		// Not the first caller's cancellation: the others wait for the same answer.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 10*time.Second)
		defer cancel()
		now := time.Now()
		id, err, final := v.review(rctx, token)
		if final {
			v.remember(key, id, err, now)
		}
		return verdict{id: id, err: err}, nil
	})
	e := res.(verdict)
	return e.id, e.err
}

func (v *TokenReview) cached(key [sha256.Size]byte) (verdict, bool) {
	v.mu.Lock()
	defer v.mu.Unlock()
	e, ok := v.cache[key]
	return e, ok && time.Now().Before(e.until)
}

// review asks the API server; final is false when it gave no verdict (an error reaching it).
func (v *TokenReview) review(ctx context.Context, token string) (Identity, error, bool) {
	tr, err := v.Client.Create(ctx, &authv1.TokenReview{Spec: authv1.TokenReviewSpec{Token: token, Audiences: []string{v.Audience}}}, metav1.CreateOptions{})
	if err != nil {
		return Identity{}, fmt.Errorf("TokenReview: %w", err), false
	}
	st := tr.Status
	if !st.Authenticated {
		why := "not authenticated"
		if st.Error != "" {
			why += ": " + truncate(st.Error, 200)
		}
		return Identity{}, fmt.Errorf("%w: TokenReview: %s", ErrRefused, why), true
	}
	if !slices.Contains(st.Audiences, v.Audience) {
		return Identity{}, fmt.Errorf("%w: TokenReview: the token is not valid for the audience %q (valid for %q)", ErrRefused, v.Audience, st.Audiences), true
	}
	id, err := ParseUsername(st.User.Username)
	if err != nil {
		return Identity{}, fmt.Errorf("TokenReview: %w", err), true
	}
	id.Expiry = unverifiedExpiry(token)
	return id, nil, true
}

func (v *TokenReview) remember(key [sha256.Size]byte, id Identity, err error, now time.Time) {
	ttl := v.CacheTTL
	if ttl == 0 {
		ttl = DefaultCacheTTL
	}
	if ttl < 0 {
		return
	}
	size := v.CacheSize
	if size <= 0 {
		size = DefaultCacheSize
	}
	until := now.Add(ttl)
	if !id.Expiry.IsZero() && id.Expiry.Before(until) {
		until = id.Expiry
	}
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.cache == nil {
		v.cache = map[[sha256.Size]byte]verdict{}
	}
	if len(v.cache) >= size {
		for k, e := range v.cache { // the expired first
			if !now.Before(e.until) {
				delete(v.cache, k)
			}
		}
		for k := range v.cache { // then any, until there is room
			if len(v.cache) < size {
				break
			}
			delete(v.cache, k)
		}
	}
	v.cache[key] = verdict{id: id, err: err, until: until}
}

// unverifiedExpiry reads the exp claim of a JWT without checking its signature; zero when the
// token is not a JWT or has none (a legacy Secret token never expires).
func unverifiedExpiry(token string) time.Time {
	parts := strings.Split(token, ".")
	if len(parts) != 3 {
		return time.Time{}
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return time.Time{}
	}
	var c struct {
		Exp *json.Number `json:"exp"`
	}
	if json.Unmarshal(raw, &c) != nil || c.Exp == nil {
		return time.Time{}
	}
	s, err := c.Exp.Int64()
	if err != nil || s <= 0 {
		return time.Time{}
	}
	return time.Unix(s, 0)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}
