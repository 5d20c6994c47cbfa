package e2e

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func saveState(t *testing.T, r *replica, key, value, etag string) int {
	t.Helper()
	item := map[string]any{"key": key, "value": value}
	if etag != "" {
		item["etag"] = etag
		item["options"] = map[string]string{"concurrency": "first-write"}
	}
	body, _ := json.Marshal([]any{item})
	resp, err := http.Post(r.daprURL("/v1.0/state/kv"), "application/json", bytes.NewReader(body))
	require.NoError(t, err)
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.StatusCode
}

func getState(t *testing.T, r *replica, key string) (value, etag string, status int) {
	t.Helper()
	resp, err := http.Get(r.daprURL("/v1.0/state/kv/" + key))
	require.NoError(t, err)
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode == http.StatusOK {
		_ = json.Unmarshal(b, &value)
	}
	return value, resp.Header.Get("ETag"), resp.StatusCode
}

// State through daprd and the key-value store inside the broker: written by one replica, read by
// another; an ETag conflict reaches the app as HTTP 409; keys survive a broker kill -9.
func TestDaprdStateSharedBetweenReplicasAndDurable(t *testing.T) {
	s := newStack(t)
	r1 := s.newReplica("r1", nil).withState()
	r1.startComponents()
	r1.startDaprd("connector", 0, "")
	r2 := s.newReplica("r2", nil).withState()
	r2.startComponents()
	r2.startDaprd("connector", 0, "")

	require.Equal(t, http.StatusNoContent, saveState(t, r1, "asset-7", "pump", ""))
	v, etag, status := getState(t, r2, "asset-7")
	require.Equal(t, http.StatusOK, status)
	assert.Equal(t, "pump", v, "written by one replica, read by the other")
	require.NotEmpty(t, etag)

	require.Equal(t, http.StatusNoContent, saveState(t, r2, "asset-7", "pump-v2", etag))
	assert.Equal(t, http.StatusConflict, saveState(t, r1, "asset-7", "stale-write", etag), "the old ETag no longer matches")
	v, _, _ = getState(t, r1, "asset-7")
	assert.Equal(t, "pump-v2", v)

	// A key with a TTL: its expiry keeps running across the broker's restart.
	body := bytes.NewBufferString(`[{"key":"session-token","value":"t","metadata":{"ttlInSeconds":"3"}}]`)
	resp, err := http.Post(r1.daprURL("/v1.0/state/kv"), "application/json", body)
	require.NoError(t, err)
	resp.Body.Close()
	require.Equal(t, http.StatusNoContent, resp.StatusCode)
	setAt := time.Now()

	s.broker.kill(syscall.SIGKILL)
	s.startBroker()
	require.Eventually(t, func() bool {
		v, _, status := getState(t, r1, "asset-7")
		return status == http.StatusOK && v == "pump-v2"
	}, 30*time.Second, 100*time.Millisecond, "the key survives kill -9 of the broker")
	require.Eventually(t, func() bool {
		_, _, status := getState(t, r1, "session-token")
		return status == http.StatusNoContent
	}, 30*time.Second, 100*time.Millisecond, "the TTL key expires")
	assert.Less(t, time.Since(setAt), 10*time.Second, "expiry continued across the restart instead of starting over")
	assert.GreaterOrEqual(t, time.Since(setAt), 3*time.Second)
}
