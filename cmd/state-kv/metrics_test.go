package main

import (
	"bufio"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	proto "github.com/dapr/dapr/pkg/proto/components/v1"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

// startComponentWithMetrics runs the component process with MQDAPR_METRICS_ADDR on port 0 and
// returns a client on its socket and its metrics URL (the line it prints).
func startComponentWithMetrics(t *testing.T) (proto.StateStoreClient, string) {
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", "DAPR_COMPONENT_SOCKETS_FOLDER="+dir, "MQDAPR_LOG_LEVEL=fatal",
		"MQDAPR_METRICS_ADDR=127.0.0.1:0")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	var url string
	sc := bufio.NewScanner(out)
	for url == "" && sc.Scan() {
		url, _ = strings.CutPrefix(sc.Text(), "metrics ")
	}
	require.NotEmpty(t, url, "the component printed no metrics URL: %v", sc.Err())
	go func() { // keep draining stdout
		for sc.Scan() {
		}
	}()
	sock := filepath.Join(dir, "mqttkv.sock")
	require.Eventually(t, func() bool { _, err := os.Stat(sock); return err == nil }, 30*time.Second, 20*time.Millisecond)
	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { cc.Close() })
	return proto.NewStateStoreClient(cc), url
}

// The component process's /metrics (MQDAPR_METRICS_ADDR), parsed by the Prometheus text parser,
// moves with calls made over the socket as daprd makes them: operations timed by name, an ETag
// mismatch counted as a conflict and an invalid ETag apart from it.
func TestMetricsProcess(t *testing.T) {
	url := startBroker(t)
	c, metrics := startComponentWithMetrics(t)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	before := testutil.Scrape(t, metrics)
	require.True(t, before.Has("mqdapr_state_op_duration_seconds", "operation", "bulk_delete"), "every operation exists from the start")
	require.EqualValues(t, 0, before.Value("mqdapr_state_etag_conflicts_total"))

	_, err := c.Init(ctx, &proto.InitRequest{Metadata: &proto.MetadataRequest{Properties: map[string]string{
		"url": url, "consumerID": "app", "clientID": "metrics", "connectTimeout": "5s"}}})
	require.NoError(t, err)
	_, err = c.Set(ctx, &proto.SetRequest{Key: "app||k", Value: []byte("v1")})
	require.NoError(t, err)
	g, err := c.Get(ctx, &proto.GetRequest{Key: "app||k"})
	require.NoError(t, err)
	_, err = c.Set(ctx, &proto.SetRequest{Key: "app||k", Value: []byte("v2"), Etag: &proto.Etag{Value: "001000000000000:00000:stale"}})
	require.Equal(t, codes.FailedPrecondition, status.Code(err))
	_, err = c.Delete(ctx, &proto.DeleteRequest{Key: "app||k", Etag: &proto.Etag{Value: "bad"}})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	_, err = c.Delete(ctx, &proto.DeleteRequest{Key: "app||k", Etag: g.Etag})
	require.NoError(t, err)
	_, err = c.BulkGet(ctx, &proto.BulkGetRequest{Items: []*proto.GetRequest{{Key: "app||a"}, {Key: "app||b"}}})
	require.NoError(t, err)

	m := testutil.Scrape(t, metrics)
	for op, n := range map[string]float64{"set": 2, "get": 1, "delete": 2, "bulk_get": 1, "bulk_set": 0} {
		require.Equal(t, n, m.Value("mqdapr_state_op_duration_seconds", "operation", op), op)
	}
	require.Greater(t, m.Histogram(t, "mqdapr_state_op_duration_seconds", "operation", "set").GetSampleSum(), 0.0)
	require.EqualValues(t, 1, m.Value("mqdapr_state_op_errors_total", "operation", "set", "error", "etag_mismatch"))
	require.EqualValues(t, 1, m.Value("mqdapr_state_op_errors_total", "operation", "delete", "error", "etag_invalid"))
	require.EqualValues(t, 0, m.Value("mqdapr_state_op_errors_total", "operation", "get", "error", "other"))
	require.EqualValues(t, 1, m.Value("mqdapr_state_etag_conflicts_total"))
	require.EqualValues(t, 0, m.Value("mqdapr_state_reconnects_total"))
	require.True(t, m.Has("go_goroutines"))
}
