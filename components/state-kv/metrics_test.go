package statekv

import (
	"context"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/dapr/components-contrib/state"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

// /metrics, parsed by the Prometheus text parser, moves with real calls through a real broker: a
// bulk set with two stale ETags counts one failed call and two conflicts, and a broker restart
// counts one reconnection.
func TestMetricsBulkConflictsAndReconnect(t *testing.T) {
	b, stop := startBrokerAt(t, "127.0.0.1:0")
	addr := b.Addrs()[0]
	p := &Pluggable{Store: newStore(t, props("mqtt://"+addr, "metrics"))}
	coll := NewCollector()
	coll.Add(p)
	reg := prometheus.NewRegistry()
	reg.MustRegister(coll)
	srv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(srv.Close)
	url := srv.URL + "/metrics"

	require.NoError(t, p.Set(t.Context(), &state.SetRequest{Key: "a", Value: []byte("1")}))
	stale := "001000000000000:00000:stale"
	err := p.BulkSet(t.Context(), []state.SetRequest{
		{Key: "a", Value: []byte("2"), ETag: &stale},
		{Key: "b", Value: []byte("2"), ETag: &stale},
		{Key: "c", Value: []byte("2")},
	}, state.BulkStoreOpts{})
	require.Error(t, err)
	m := testutil.Scrape(t, url)
	require.EqualValues(t, 1, m.Value("mqdapr_state_op_duration_seconds", "operation", "set"))
	require.EqualValues(t, 1, m.Value("mqdapr_state_op_duration_seconds", "operation", "bulk_set"))
	require.EqualValues(t, 1, m.Value("mqdapr_state_op_errors_total", "operation", "bulk_set", "error", "etag_mismatch"))
	require.EqualValues(t, 2, m.Value("mqdapr_state_etag_conflicts_total"), "one per key")
	require.EqualValues(t, 0, m.Value("mqdapr_state_reconnects_total"))

	stop()
	_, stop = startBrokerAt(t, addr)
	t.Cleanup(stop)
	require.Eventually(t, func() bool {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		return p.Set(ctx, &state.SetRequest{Key: "k", Value: []byte("again")}) == nil
	}, waitFor, 100*time.Millisecond)
	m = testutil.Scrape(t, url)
	require.EqualValues(t, 1, m.Value("mqdapr_state_reconnects_total"))
}
