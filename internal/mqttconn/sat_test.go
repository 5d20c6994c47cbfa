package mqttconn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/internal/testutil"
)

// satAuthenticator is the broker side of K8S-SAT for the test: it accepts the tokens in valid and
// records every step it saw.
type satAuthenticator struct {
	mu    sync.Mutex
	valid map[string]bool
	steps []broker.AuthRequest
}

func (a *satAuthenticator) Authenticate(_ context.Context, r *broker.AuthRequest) (broker.AuthResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.steps = append(a.steps, *r)
	if r.Method != SATAuthMethod {
		return broker.AuthResponse{}, &broker.ReasonError{Code: 0x8C}
	}
	if !a.valid[string(r.Data)] {
		return broker.AuthResponse{}, &broker.ReasonError{Code: 0x87}
	}
	return broker.AuthResponse{}, nil
}

func (a *satAuthenticator) reauths() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, s := range a.steps {
		if s.Reauth {
			out = append(out, string(s.Data))
		}
	}
	return out
}

func startAuthBroker(t *testing.T, auth broker.Authenticator) string {
	o := broker.NewDefaultOptions()
	o.Addr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	o.Authenticator = auth
	b, err := broker.New(o)
	require.NoError(t, err)
	require.NoError(t, b.Start())
	t.Cleanup(func() { _ = b.Close() })
	return "mqtt://" + o.Addr
}

// A rotated service-account token is presented inside the open connection (AUTH 0x19): no
// reconnect, so no pending acknowledgement is voided.
func TestSATReauthenticatesWhenTokenRotates(t *testing.T) {
	auth := &satAuthenticator{valid: map[string]bool{"token-1": true, "token-2": true}}
	url := startAuthBroker(t, auth)
	tokenFile := filepath.Join(t.TempDir(), "mqtt-client-token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("token-1\n"), 0o600))

	s := DefaultSettings()
	s.URL, s.SATAuthFile, s.SATRefreshInterval, s.ClientID, s.ConnectTimeout = url, tokenFile, 100*time.Millisecond, "r1", 5*time.Second
	c, err := Dial(t.Context(), Options{Settings: s, Kind: KindPubSub})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	auth.mu.Lock()
	require.Len(t, auth.steps, 1)
	assert.Equal(t, "token-1", string(auth.steps[0].Data), "the token goes in CONNECT, trimmed")
	auth.mu.Unlock()

	require.NoError(t, os.WriteFile(tokenFile, []byte("token-2"), 0o600))
	require.Eventually(t, func() bool { return c.Reauthentications() == 1 }, 10*time.Second, 20*time.Millisecond)
	assert.Equal(t, []string{"token-2"}, auth.reauths())
	assert.Equal(t, uint64(1), c.Connects(), "re-authenticated without reconnecting")
	assert.True(t, c.Connected())
}

func TestSATRefusedTokenFailsFast(t *testing.T) {
	url := startAuthBroker(t, &satAuthenticator{valid: map[string]bool{"good": true}})
	tokenFile := filepath.Join(t.TempDir(), "token")
	require.NoError(t, os.WriteFile(tokenFile, []byte("stolen"), 0o600))
	s := DefaultSettings()
	s.URL, s.SATAuthFile, s.ClientID, s.ConnectTimeout = url, tokenFile, "r1", 20*time.Second
	start := time.Now()
	_, err := Dial(t.Context(), Options{Settings: s, Kind: KindPubSub})
	require.Error(t, err)
	assert.True(t, errors.Is(err, ErrConnect))
	assert.Contains(t, err.Error(), "reason 0x87 not authorized")
	assert.NotContains(t, err.Error(), "stolen", "tokens never appear in errors")
	assert.Less(t, time.Since(start), 10*time.Second, "a refusal retrying cannot fix fails at once")

	empty := filepath.Join(t.TempDir(), "empty")
	require.NoError(t, os.WriteFile(empty, nil, 0o600))
	s.SATAuthFile = empty
	_, err = Dial(t.Context(), Options{Settings: s, Kind: KindPubSub})
	require.ErrorContains(t, err, "is empty; want a Kubernetes service-account token")
}
