package main

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/brokermetrics"
	"github.com/mqdapr/mqdapr/broker/statestore"
)

// opsServer is the HTTP server of -metrics-addr: /metrics (Prometheus), /healthz (liveness: the
// process serves HTTP) and /readyz (readiness: the store is restored and every listener is up;
// 503 before that and once shutting down). It starts before the broker, so that a long restore of
// a large data directory is live but not ready.
type opsServer struct {
	reg   *prometheus.Registry
	srv   *http.Server
	addr  net.Addr
	out   io.Writer    // where ready prints the metrics URL (stdout)
	state atomic.Int32 // opsStarting, opsReady or opsStopping
}

const (
	opsStarting int32 = iota
	opsReady
	opsStopping
)

// startOps listens on addr and serves; nil (and every method a no-op) when addr is empty.
func startOps(addr string, log *slog.Logger) (*opsServer, error) {
	if addr == "" {
		return nil, nil
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("-metrics-addr: %w", err)
	}
	o := &opsServer{reg: prometheus.NewRegistry(), addr: l.Addr(), out: os.Stdout}
	o.reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { fmt.Fprintln(w, "ok") })
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		switch o.state.Load() {
		case opsReady:
			fmt.Fprintln(w, "ready")
		case opsStarting:
			http.Error(w, "starting: restoring the store and opening the listeners", http.StatusServiceUnavailable)
		default:
			http.Error(w, "shutting down", http.StatusServiceUnavailable)
		}
	})
	o.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		if err := o.srv.Serve(l); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("metrics server", "err", err)
		}
	}()
	return o, nil
}

// ready registers the broker's collector (b started: its store is open) and reports ready.
func (o *opsServer) ready(b *broker.Broker, kv *statestore.Engine, more ...prometheus.Collector) {
	if o == nil {
		return
	}
	o.reg.MustRegister(brokermetrics.New(b, kv))
	o.reg.MustRegister(more...)
	o.state.Store(opsReady)
	// The bound address, one line after "listening", for scripts and tests that use port 0.
	fmt.Fprintf(o.out, "metrics http://%s/metrics\n", o.addr)
}

// stopping makes /readyz fail from now on (the broker is shutting down).
func (o *opsServer) stopping() {
	if o != nil {
		o.state.Store(opsStopping)
	}
}

func (o *opsServer) close() {
	if o != nil {
		_ = o.srv.Close()
	}
}
