package pluggable

import (
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/dapr/kit/logger"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// MetricsAddrEnv names the environment variable with the HTTP address (host:port) on which a
// component process serves Prometheus metrics at /metrics. Unset or empty: no metrics server.
// mqdapr's manifests use 9884 for pubsub-mqtt5 and 9885 for state-kv, beside daprd's 9090 and the
// broker's 9883.
const MetricsAddrEnv = "MQDAPR_METRICS_ADDR"

// ServeMetrics serves cs, with the Go runtime and process collectors, at /metrics on the address in
// MQDAPR_METRICS_ADDR, and prints "metrics http://<bound address>/metrics" to out (for port 0). It
// does nothing when the variable is unset or empty, and fails, naming the variable, when the
// address cannot be listened on. The server lives as long as the process.
func ServeMetrics(log logger.Logger, out io.Writer, cs ...prometheus.Collector) error {
	addr := os.Getenv(MetricsAddrEnv)
	if addr == "" {
		return nil
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range cs {
		if err := reg.Register(c); err != nil {
			return fmt.Errorf("%s: %w", MetricsAddrEnv, err)
		}
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("%s=%q: %w (want host:port, e.g. 0.0.0.0:9884; unset to disable)", MetricsAddrEnv, addr, err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Errorf("metrics server: %v", err)
		}
	}()
	fmt.Fprintf(out, "metrics http://%s/metrics\n", l.Addr())
	return nil
}
