package main

import (
	"context"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	proto "github.com/dapr/dapr/pkg/proto/components/v1"
	"github.com/stretchr/testify/require"
	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/kvservice"
	"github.com/mqdapr/mqdapr/broker/statestore"
	"github.com/mqdapr/mqdapr/internal/testutil"
)

// helperEnv makes the test binary run main() instead of the tests (the component process).
const helperEnv = "STATEKV_RUN_MAIN"

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func startBroker(t *testing.T) string {
	t.Helper()
	engine, err := statestore.NewEngine(statestore.NewDefaultOptions())
	require.NoError(t, err)
	svc, err := kvservice.New(kvservice.Options{Engine: engine})
	require.NoError(t, err)
	o := broker.NewDefaultOptions()
	o.Addr = "127.0.0.1:0"
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	o.Services = []broker.Service{svc}
	b, err := broker.New(o)
	require.NoError(t, err)
	require.NoError(t, b.Start())
	require.NoError(t, svc.Start(b))
	t.Cleanup(func() {
		_ = svc.Close()
		_ = b.Close()
		_ = engine.Close()
	})
	return "mqtt://" + b.Addrs()[0]
}

// The component process serves state.mqttkv on <folder>/mqttkv.sock: over the socket (daprd's
// protocol) it initialises, advertises ETAG and TTL, sets and gets, returns an ETag mismatch as
// FailedPrecondition with a BadRequest violation on "etag" (what daprd maps back to an ETag error),
// and removes its socket on SIGTERM.
func TestServesOverUnixSocket(t *testing.T) {
	url := startBroker(t)
	dir := t.TempDir()
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", "DAPR_COMPONENT_SOCKETS_FOLDER="+dir, "MQDAPR_LOG_LEVEL=fatal")
	require.NoError(t, cmd.Start())
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
	})
	sock := filepath.Join(dir, "mqttkv.sock")
	require.Eventually(t, func() bool { _, err := os.Stat(sock); return err == nil }, 30*time.Second, 20*time.Millisecond)

	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	defer cc.Close()
	c := proto.NewStateStoreClient(cc)
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	_, err = c.Init(ctx, &proto.InitRequest{Metadata: &proto.MetadataRequest{Properties: map[string]string{
		"url": url, "consumerID": "app", "clientID": "sock", "connectTimeout": "5s"}}})
	require.NoError(t, err)
	f, err := c.Features(ctx, &proto.FeaturesRequest{})
	require.NoError(t, err)
	require.ElementsMatch(t, []string{"ETAG", "TTL"}, f.Features)

	_, err = c.Set(ctx, &proto.SetRequest{Key: "app||k", Value: []byte("v1")})
	require.NoError(t, err)
	g, err := c.Get(ctx, &proto.GetRequest{Key: "app||k"})
	require.NoError(t, err)
	require.Equal(t, "v1", string(g.Data))
	require.NotEmpty(t, g.Etag.GetValue())

	_, err = c.Set(ctx, &proto.SetRequest{Key: "app||k", Value: []byte("v2"), Etag: &proto.Etag{Value: "001000000000000:00000:stale"}})
	st, ok := status.FromError(err)
	require.True(t, ok)
	require.Equal(t, codes.FailedPrecondition, st.Code())
	require.Len(t, st.Details(), 1)
	require.Equal(t, "etag", st.Details()[0].(*errdetails.BadRequest).FieldViolations[0].Field)
	_, err = c.Delete(ctx, &proto.DeleteRequest{Key: "app||k", Etag: &proto.Etag{Value: "bad"}})
	require.Equal(t, codes.InvalidArgument, status.Code(err))
	_, err = c.Set(ctx, &proto.SetRequest{Key: "app||k", Value: []byte("v2"), Etag: g.Etag})
	require.NoError(t, err)

	require.NoError(t, cmd.Process.Signal(syscall.SIGTERM))
	select {
	case err := <-exited:
		require.NoError(t, err)
		exited <- nil // for the cleanup
	case <-time.After(30 * time.Second):
		t.Fatal("the component did not stop on SIGTERM")
	}
	_, err = os.Stat(sock)
	require.True(t, os.IsNotExist(err), "socket removed")
}

// The socket is Srwxrwx--- (daprd runs as the component's user or in its group; other users may
// not connect) although components-go-sdk sets the umask to 0, and a world-writable socket folder
// is warned about.
func TestSocketMode(t *testing.T) {
	testutil.CheckSocketMode(t, "mqttkv", helperEnv+"=1")
}
