package main

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	runtimev1pb "github.com/dapr/dapr/pkg/proto/runtime/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/emptypb"
)

// unusedPort returns a loopback port with nothing listening (daprd absent).
func unusedPort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, port, _ := net.SplitHostPort(l.Addr().String())
	_ = l.Close()
	return port
}

// TestStartServeShutdown starts the wired app without daprd: it lists its subscriptions over the
// app gRPC port, answers /healthz and /metrics, and stops cleanly when its context ends.
func TestStartServeShutdown(t *testing.T) {
	cfg, err := parseConfig([]string{"-app-port", "0", "-health-addr", "127.0.0.1:0", "-lake", t.TempDir(),
		"-replica", "r1", "-dapr-grpc-port", unusedPort(t)})
	if err != nil {
		t.Fatal(err)
	}
	a, err := start(cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- a.serve(ctx) }()

	conn, err := grpc.NewClient(a.lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer ccancel()
	list, err := runtimev1pb.NewAppCallbackClient(conn).ListTopicSubscriptions(cctx, &emptypb.Empty{}, grpc.WaitForReady(true))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(list.GetSubscriptions()); n != 2 {
		t.Fatalf("%d subscriptions; want 2", n)
	}

	base := "http://" + a.hlis.Addr().String()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(base + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Fatalf("/healthz %d", code)
	}
	if _, body := get("/metrics"); !strings.Contains(body, "mqdapr_connector_written_total 0") {
		t.Fatalf("/metrics %q", body)
	}
	http.DefaultClient.CloseIdleConnections()

	cancel()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("health endpoint still served after shutdown")
	}
}
