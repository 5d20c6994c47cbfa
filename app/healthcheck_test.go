package main

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"strings"
	"testing"
)

// `app healthcheck` against the running app: exit 0 while it serves /healthz, also when
// HEALTH_ADDR is the 0.0.0.0 address it listens on; exit 1 once it has shut down.
func TestHealthcheckSubcommand(t *testing.T) {
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

	addr := a.hlis.Addr().String()
	var out bytes.Buffer
	if code := healthcheckMain([]string{"-url", "http://" + addr + "/healthz"}, &out); code != 0 {
		t.Fatalf("healthcheck exit %d: %s", code, out.String())
	}
	_, port, _ := strings.Cut(addr, ":")
	t.Setenv("HEALTH_ADDR", "0.0.0.0:"+port)
	out.Reset()
	if code := healthcheckMain(nil, &out); code != 0 || !strings.HasPrefix(out.String(), "healthy: http://127.0.0.1:"+port+"/healthz") {
		t.Fatalf("healthcheck exit %d: %s", code, out.String())
	}

	cancel()
	if err := <-served; err != nil {
		t.Fatalf("serve: %v", err)
	}
	out.Reset()
	if code := healthcheckMain(nil, &out); code != 1 || !strings.HasPrefix(out.String(), "unhealthy: ") {
		t.Fatalf("healthcheck after shutdown: exit %d: %s", code, out.String())
	}
}
