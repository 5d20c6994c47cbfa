package satauth

import (
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	authv1 "k8s.io/api/authentication/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/stretchr/testify/require"
)

// fakeAPIServer answers POST /apis/authentication.k8s.io/v1/tokenreviews like the Kubernetes API
// server: the verdict for each token is set by the test; the caller must present the broker's own
// bearer token.
type fakeAPIServer struct {
	*httptest.Server
	mu       sync.Mutex
	verdicts map[string]func(spec authv1.TokenReviewSpec) (authv1.TokenReviewStatus, int)
	reviews  int
}

const brokerBearer = "broker-sa-token"

func newFakeAPIServer(t *testing.T) *fakeAPIServer {
	f := &fakeAPIServer{verdicts: map[string]func(authv1.TokenReviewSpec) (authv1.TokenReviewStatus, int){}}
	f.Server = httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/apis/authentication.k8s.io/v1/tokenreviews" {
			http.Error(w, "not found", http.StatusNotFound)
			return
		}
		if r.Header.Get("Authorization") != "Bearer "+brokerBearer {
			w.WriteHeader(http.StatusUnauthorized)
			_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: "Failure", Reason: metav1.StatusReasonUnauthorized, Code: 401})
			return
		}
		var tr authv1.TokenReview
		if err := json.NewDecoder(r.Body).Decode(&tr); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		f.mu.Lock()
		f.reviews++
		v := f.verdicts[tr.Spec.Token]
		f.mu.Unlock()
		st, code := authv1.TokenReviewStatus{Authenticated: false, Error: "invalid bearer token"}, http.StatusCreated
		if v != nil {
			st, code = v(tr.Spec)
		}
		if code != http.StatusCreated {
			w.Header().Set("Content-Type", "application/json")
			w.WriteHeader(code)
			_ = json.NewEncoder(w).Encode(metav1.Status{TypeMeta: metav1.TypeMeta{Kind: "Status", APIVersion: "v1"}, Status: "Failure", Message: "etcd is unhappy", Reason: metav1.StatusReasonInternalError, Code: int32(code)})
			return
		}
		tr.Status = st
		tr.Kind, tr.APIVersion = "TokenReview", "authentication.k8s.io/v1"
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		_ = json.NewEncoder(w).Encode(&tr)
	}))
	t.Cleanup(f.Close)
	return f
}

// valid makes token authenticate as ns/sa for the audiences asked.
func (f *fakeAPIServer) valid(token, ns, sa string) {
	f.set(token, func(spec authv1.TokenReviewSpec) (authv1.TokenReviewStatus, int) {
		return authv1.TokenReviewStatus{Authenticated: true, Audiences: spec.Audiences,
			User: authv1.UserInfo{Username: "system:serviceaccount:" + ns + ":" + sa, Groups: []string{"system:serviceaccounts"}}}, http.StatusCreated
	})
}

func (f *fakeAPIServer) set(token string, v func(authv1.TokenReviewSpec) (authv1.TokenReviewStatus, int)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.verdicts[token] = v
}

func (f *fakeAPIServer) count() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.reviews
}

// kubeconfig writes a kubeconfig file for the fake API server (its CA, the broker's bearer token).
func (f *fakeAPIServer) kubeconfig(t *testing.T) string {
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.Certificate().Raw})
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: test
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: mqbroker
  user:
    token: %s
contexts:
- name: test
  context: {cluster: test, user: mqbroker}
current-context: test
`, f.URL, base64.StdEncoding.EncodeToString(ca), brokerBearer)
	path := filepath.Join(t.TempDir(), "kubeconfig")
	require.NoError(t, os.WriteFile(path, []byte(cfg), 0o600))
	return path
}

func newTokenReview(t *testing.T, f *fakeAPIServer) *TokenReview {
	c, err := NewTokenReviewClient(f.kubeconfig(t))
	require.NoError(t, err)
	return &TokenReview{Client: c, Audience: testAudience}
}

// TokenReview's verdicts: authenticated for the audience (identity, and the expiry of the token's
// exp), authenticated for another audience only, revoked (unauthenticated), a user that is not a
// service account, and the API server failing (an error that is no refusal, not cached).
func TestTokenReviewVerify(t *testing.T) {
	f := newFakeAPIServer(t)
	v := newTokenReview(t, f)
	k := newKey(t, "k1")
	exp := time.Now().Add(30 * time.Minute).Truncate(time.Second)
	good := k.token(t, "tenant-a", "sensor", tokenOpts{exp: exp})
	f.valid(good, "tenant-a", "sensor")
	id, err := v.Verify(t.Context(), good)
	require.NoError(t, err)
	require.Equal(t, "tenant-a/sensor", id.String())
	require.True(t, id.Expiry.Equal(exp), "expiry %v, want the token's exp %v", id.Expiry, exp)

	f.set("wrong-aud", func(authv1.TokenReviewSpec) (authv1.TokenReviewStatus, int) {
		return authv1.TokenReviewStatus{Authenticated: true, Audiences: []string{"https://kubernetes.default.svc"},
			User: authv1.UserInfo{Username: "system:serviceaccount:tenant-a:sensor"}}, http.StatusCreated
	})
	f.set("revoked", func(authv1.TokenReviewSpec) (authv1.TokenReviewStatus, int) {
		return authv1.TokenReviewStatus{Authenticated: false, Error: "[invalid bearer token, service account token has been invalidated]"}, http.StatusCreated
	})
	f.set("tok-user", func(spec authv1.TokenReviewSpec) (authv1.TokenReviewStatus, int) {
		return authv1.TokenReviewStatus{Authenticated: true, Audiences: spec.Audiences, User: authv1.UserInfo{Username: "alice"}}, http.StatusCreated
	})
	f.set("boom", func(authv1.TokenReviewSpec) (authv1.TokenReviewStatus, int) {
		return authv1.TokenReviewStatus{}, http.StatusInternalServerError
	})
	for token, want := range map[string]string{
		"wrong-aud": `not valid for the audience "mqbroker"`,
		"revoked":   "has been invalidated",
		"tok-user":  "not a service account",
	} {
		_, err := v.Verify(t.Context(), token)
		require.ErrorIs(t, err, ErrRefused, token)
		require.ErrorContains(t, err, want, token)
		require.NotContains(t, err.Error(), token)
	}
	before := f.count()
	for range 2 {
		_, err = v.Verify(t.Context(), "boom")
		require.Error(t, err)
		require.False(t, errors.Is(err, ErrRefused), "%v", err)
		require.NotContains(t, err.Error(), "boom")
	}
	require.Equal(t, before+2, f.count(), "a failure is not cached")

	other, err := NewTokenReviewClient(filepath.Join(t.TempDir(), "none"))
	require.Error(t, err)
	require.Nil(t, other)
}

// Verdicts are cached by the token's hash: a reconnection storm with one token (valid or revoked)
// is one TokenReview; the cache holds at most CacheSize verdicts and none past CacheTTL.
func TestTokenReviewCache(t *testing.T) {
	f := newFakeAPIServer(t)
	v := newTokenReview(t, f)
	v.CacheSize = 3
	f.valid("t0", "ns", "app")
	for range 50 {
		_, err := v.Verify(t.Context(), "t0")
		require.NoError(t, err)
		_, err = v.Verify(t.Context(), "revoked-one")
		require.ErrorIs(t, err, ErrRefused)
	}
	require.Equal(t, 2, f.count())
	require.Equal(t, int64(2), v.Reviews())
	for i := range 10 {
		_, _ = v.Verify(t.Context(), fmt.Sprintf("other-%d", i))
		v.mu.Lock()
		n := len(v.cache)
		v.mu.Unlock()
		require.LessOrEqual(t, n, 3)
	}

	short := newTokenReview(t, f)
	short.CacheTTL = 50 * time.Millisecond
	_, err := short.Verify(t.Context(), "t0")
	require.NoError(t, err)
	n := f.count()
	require.Eventually(t, func() bool {
		_, _ = short.Verify(t.Context(), "t0")
		return f.count() > n
	}, 5*time.Second, 20*time.Millisecond, "the verdict is asked again after CacheTTL")
}

type (
	authv1Spec   = authv1.TokenReviewSpec
	authv1Status = authv1.TokenReviewStatus
)

func userInfo(name string) authv1.UserInfo { return authv1.UserInfo{Username: name} }

// A reconnection storm: 50 clients presenting one token at once share one TokenReview (the first
// is held at the API server until all have started), and all get its verdict.
func TestTokenReviewConcurrentShareOne(t *testing.T) {
	f := newFakeAPIServer(t)
	v := newTokenReview(t, f)
	arrived, release := make(chan struct{}, 100), make(chan struct{})
	f.set("storm", func(spec authv1.TokenReviewSpec) (authv1.TokenReviewStatus, int) {
		arrived <- struct{}{}
		<-release
		return authv1.TokenReviewStatus{Authenticated: true, Audiences: spec.Audiences, User: userInfo("system:serviceaccount:ns:app")}, http.StatusCreated
	})
	var wg sync.WaitGroup
	errs := make(chan error, 50)
	for range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			id, err := v.Verify(t.Context(), "storm")
			if err == nil && id.String() != "ns/app" {
				err = fmt.Errorf("identity %q", id)
			}
			errs <- err
		}()
	}
	select {
	case <-arrived:
	case <-time.After(10 * time.Second):
		t.Fatal("no TokenReview arrived")
	}
	close(release)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Equal(t, 1, f.count())
}
