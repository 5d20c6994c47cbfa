package main

import (
	"bufio"
	"context"
	"net"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

// MQDAPR_METRICS_ADDR makes the component process serve /metrics: the component's families (zero
// before any Init) and the Go runtime's, parsed by the Prometheus text parser.
func TestMetricsAddrServes(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", "DAPR_COMPONENT_SOCKETS_FOLDER="+t.TempDir(), "MQDAPR_LOG_LEVEL=fatal",
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
	require.NotEmpty(t, url, "no metrics URL printed: %v", sc.Err())
	m := testutil.Scrape(t, url)
	for _, name := range []string{"mqdapr_pubsub_delivered_total", "mqdapr_pubsub_acked_total", "mqdapr_pubsub_handler_failures_total",
		"mqdapr_pubsub_dead_lettered_total", "mqdapr_pubsub_held_messages", "mqdapr_pubsub_handlers_in_flight",
		"mqdapr_pubsub_handler_duration_seconds", "mqdapr_pubsub_reconnects_total", "go_goroutines"} {
		require.True(t, m.Has(name), name)
	}
	require.EqualValues(t, 0, m.Value("mqdapr_pubsub_delivered_total"))
}

// An MQDAPR_METRICS_ADDR that cannot be listened on (here: taken) stops the process at start,
// naming the variable, rather than serving without the metrics an operator asked for.
func TestMetricsAddrTakenExits(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer l.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", "DAPR_COMPONENT_SOCKETS_FOLDER="+t.TempDir(), "MQDAPR_METRICS_ADDR="+l.Addr().String())
	out, err := cmd.CombinedOutput()
	require.NoError(t, ctx.Err(), "the component did not exit: %s", out)
	var ee *exec.ExitError
	require.ErrorAs(t, err, &ee, "%s", out)
	require.Equal(t, 1, ee.ExitCode(), "%s", out)
	require.Contains(t, string(out), "MQDAPR_METRICS_ADDR")
	require.Contains(t, string(out), l.Addr().String())
	require.Contains(t, string(out), "address already in use")
}
