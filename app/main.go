// Command app is the sample northbound connector: it subscribes (through daprd, app protocol gRPC)
// to device telemetry with a shared subscription and to retained asset configuration, and appends
// validated, contextualised, deduplicated rows durably to a local JSON Lines lake. See README.md.
//
// `app healthcheck` probes a running app's /healthz (the image's HEALTHCHECK).
//
// This package only wires; the logic is in app/connector, app/dedup, app/lake, app/telemetry.
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/signal"
	"runtime"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	dapr "github.com/dapr/go-sdk/client"
	"github.com/dapr/go-sdk/service/common"
	daprgrpc "github.com/dapr/go-sdk/service/grpc"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/mqdapr/mqdapr/app/connector"
	"github.com/mqdapr/mqdapr/app/dedup"
	"github.com/mqdapr/mqdapr/app/health"
	"github.com/mqdapr/mqdapr/app/kv"
	"github.com/mqdapr/mqdapr/app/lake"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(healthcheckMain(os.Args[2:], os.Stdout))
	}
	cfg, err := parseConfig(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "app:", err)
		os.Exit(2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: cfg.logLevel}))
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, cfg, log); err != nil {
		log.Error("app stopped", "err", err)
		os.Exit(1)
	}
}

// run serves until ctx ends, then shuts down gracefully.
func run(ctx context.Context, cfg config, log *slog.Logger) error {
	a, err := start(cfg, log)
	if err != nil {
		return err
	}
	return a.serve(ctx)
}

// app is the wired connector with its listeners open.
type app struct {
	cfg      config
	log      *slog.Logger
	lake     *lake.Lake
	client   dapr.Client
	c        *connector.Connector
	svc      common.Service
	lis      net.Listener // gRPC app port
	hsrv     *http.Server
	hlis     net.Listener // health
	psrv     *http.Server // pprof, when -pprof-addr is set
	plis     net.Listener
	stopping atomic.Bool
}

// start wires everything and opens the app and health listeners; it does not serve yet. On error
// everything opened so far is closed.
func start(cfg config, log *slog.Logger) (a *app, err error) {
	a = &app{cfg: cfg, log: log}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	if a.lake, err = lake.New(lake.Options{Root: cfg.lakeDir, Replica: cfg.replica}); err != nil {
		return nil, err
	}
	// A lazy connection: the app may start before daprd; calls fail (and messages are
	// redelivered) until daprd answers.
	conn, err := grpc.NewClient(net.JoinHostPort("127.0.0.1", cfg.daprGRPCPort), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, fmt.Errorf("dapr gRPC client: %w", err)
	}
	a.client = dapr.NewClientWithConnection(conn)

	store := &kv.Counted{Store: kv.NewDapr(a.client, cfg.stateStore)}
	a.c, err = connector.New(connector.Options{
		TelemetryFilter:     cfg.telemetryTopic,
		TelemetryPartitions: cfg.partitions,
		ConfigFilter:        cfg.configTopic,
		DeadLetterTopic:     cfg.deadLetterTopic,
		Store:               store,
		Lake:                a.lake,
		Dedup: dedup.New(dedup.Options{Store: store, Rows: a.lake, Replica: cfg.replica, ClaimTTL: cfg.claimTTL, DoneTTL: cfg.dedupTTL,
			OnDoneError: func(key string, err error) {
				log.Error("dedup record left pending (its row is durable; a redelivery completes it)", "key", key, "err", err)
			}}),
		DeadLet: connector.DaprPublisher{Client: a.client, PubSub: cfg.pubsub},
		Log:     log,
	})
	if err != nil {
		return nil, err
	}

	if a.lis, err = net.Listen("tcp", net.JoinHostPort(cfg.appHost, cfg.appPort)); err != nil {
		return nil, fmt.Errorf("app port: %w", err)
	}
	a.svc = daprgrpc.NewServiceWithListener(a.lis)
	if err := connector.Register(a.svc, a.c, cfg.pubsub, cfg.sharedGroup); err != nil {
		return nil, err
	}
	a.hsrv = &http.Server{
		ReadHeaderTimeout: 5 * time.Second,
		Handler: health.Handler(func() error {
			if a.stopping.Load() {
				return errors.New("shutting down")
			}
			return nil
		}, func() map[string]int64 {
			m := a.c.Counters().Snapshot()
			m["state_calls"], m["state_keys"] = store.Calls.Load(), store.Keys.Load()
			return m
		}),
	}
	if a.hlis, err = net.Listen("tcp", cfg.healthAddr); err != nil {
		return nil, fmt.Errorf("health address: %w", err)
	}
	if cfg.pprofAddr != "" {
		if a.plis, err = net.Listen("tcp", cfg.pprofAddr); err != nil {
			return nil, fmt.Errorf("pprof address: %w", err)
		}
		a.psrv = &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: pprofHandler()}
	}
	return a, nil
}

// serve serves until ctx ends or a server fails, then shuts down gracefully: /healthz turns 503,
// no new deliveries are taken, in-flight handlers finish (rows fsynced, acked) within
// shutdownTimeout, then the lake files are synced and closed.
func (a *app) serve(ctx context.Context) error {
	cfg := a.cfg
	errc := make(chan error, 2)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); errc <- a.svc.Start() }()
	go func() { defer wg.Done(); errc <- a.hsrv.Serve(a.hlis) }()
	if a.psrv != nil {
		// Not in wg nor errc: profiling is a side door that must not stop the app.
		go func() { _ = a.psrv.Serve(a.plis) }()
	}
	a.log.Info("connector started", "appAddr", a.lis.Addr().String(), "health", a.hlis.Addr().String(),
		"daprGRPCPort", cfg.daprGRPCPort, "pubsub", cfg.pubsub, "stateStore", cfg.stateStore,
		"telemetry", cfg.telemetryTopic, "partitions", cfg.partitions, "sharedGroup", cfg.sharedGroup, "config", cfg.configTopic,
		"deadLetter", cfg.deadLetterTopic, "lake", cfg.lakeDir, "replica", cfg.replica)

	var runErr error
	select {
	case <-ctx.Done():
		a.log.Info("shutting down")
	case runErr = <-errc:
		a.log.Error("server failed; shutting down", "err", runErr)
	}
	a.stopping.Store(true)

	done := make(chan struct{})
	go func() { _ = a.svc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(cfg.shutdownTimeout):
		a.log.Warn("in-flight deliveries did not finish in time; stopping (they are redelivered)", "timeout", cfg.shutdownTimeout)
		_ = a.svc.Stop()
		<-done
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := a.c.Flush(sctx); err != nil {
		a.log.Warn("work after acks not finished (dedup records stay pending, last-known values behind)", "err", err)
	}
	_ = a.hsrv.Shutdown(sctx)
	if a.psrv != nil {
		_ = a.psrv.Close()
	}
	wg.Wait()
	a.close()
	a.log.Info("connector stopped", "counters", a.c.Counters().Snapshot())
	if errors.Is(runErr, http.ErrServerClosed) {
		runErr = nil
	}
	return runErr
}

// close releases what start opened (listeners only when serve did not run).
func (a *app) close() {
	if a.lake != nil {
		if err := a.lake.Close(); err != nil {
			a.log.Error("closing the lake", "err", err)
		}
	}
	if a.client != nil {
		a.client.Close()
	}
	if a.hlis != nil {
		_ = a.hlis.Close()
	}
	if a.lis != nil {
		_ = a.lis.Close()
	}
	if a.plis != nil {
		_ = a.plis.Close()
	}
}

// pprofHandler serves net/http/pprof under /debug/pprof/ and turns on block and mutex profiling
// (off by default in Go, and costly enough to be only on when asked for): where handlers wait is
// what decides the connector's throughput.
func pprofHandler() http.Handler {
	runtime.SetBlockProfileRate(int(10 * time.Microsecond))
	runtime.SetMutexProfileFraction(10)
	mux := http.NewServeMux()
	mux.HandleFunc("/debug/pprof/", pprof.Index)
	mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
	mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
	mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
	mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	return mux
}
