// Command app is the sample northbound connector: it subscribes (through daprd, app protocol gRPC)
// to device telemetry with a shared subscription and to retained asset configuration, and appends
// validated, contextualised, deduplicated rows durably to a local JSON Lines lake. See README.md.
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
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	dapr "github.com/dapr/go-sdk/client"
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

// run serves until ctx ends, then shuts down gracefully: no new deliveries, in-flight handlers
// finish (their rows fsynced and acked) within shutdownTimeout, files closed.
func run(ctx context.Context, cfg config, log *slog.Logger) error {
	lk, err := lake.New(lake.Options{Root: cfg.lakeDir, Replica: cfg.replica})
	if err != nil {
		return err
	}
	defer func() {
		if err := lk.Close(); err != nil {
			log.Error("closing the lake", "err", err)
		}
	}()

	// A lazy connection: the app may start before daprd; calls fail (and messages are
	// redelivered) until daprd answers.
	conn, err := grpc.NewClient(net.JoinHostPort("127.0.0.1", cfg.daprGRPCPort), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return fmt.Errorf("dapr gRPC client: %w", err)
	}
	client := dapr.NewClientWithConnection(conn)
	defer client.Close()

	store := kv.NewDapr(client, cfg.stateStore)
	c, err := connector.New(connector.Options{
		TelemetryFilter: cfg.telemetryTopic,
		ConfigFilter:    cfg.configTopic,
		DeadLetterTopic: cfg.deadLetterTopic,
		Store:           store,
		Lake:            lk,
		Dedup:           dedup.New(dedup.Options{Store: store, Rows: lk, Replica: cfg.replica, ClaimTTL: cfg.claimTTL, DoneTTL: cfg.dedupTTL}),
		DeadLet:         connector.DaprPublisher{Client: client, PubSub: cfg.pubsub},
		Log:             log,
	})
	if err != nil {
		return err
	}

	lis, err := net.Listen("tcp", net.JoinHostPort(cfg.appHost, cfg.appPort))
	if err != nil {
		return fmt.Errorf("app port: %w", err)
	}
	svc := daprgrpc.NewServiceWithListener(lis)
	if err := connector.Register(svc, c, cfg.pubsub, cfg.sharedGroup); err != nil {
		return err
	}

	var stopping atomic.Bool
	hsrv := &http.Server{
		Addr:              cfg.healthAddr,
		ReadHeaderTimeout: 5 * time.Second,
		Handler: health.Handler(func() error {
			if stopping.Load() {
				return errors.New("shutting down")
			}
			return nil
		}, c.Counters().Snapshot),
	}
	hlis, err := net.Listen("tcp", cfg.healthAddr)
	if err != nil {
		return fmt.Errorf("health address: %w", err)
	}

	errc := make(chan error, 2)
	go func() { errc <- svc.Start() }()
	go func() { errc <- hsrv.Serve(hlis) }()
	log.Info("connector started", "appAddr", lis.Addr().String(), "health", hlis.Addr().String(),
		"daprGRPCPort", cfg.daprGRPCPort, "pubsub", cfg.pubsub, "stateStore", cfg.stateStore,
		"telemetry", cfg.telemetryTopic, "sharedGroup", cfg.sharedGroup, "config", cfg.configTopic,
		"deadLetter", cfg.deadLetterTopic, "lake", cfg.lakeDir, "replica", cfg.replica)

	var runErr error
	select {
	case <-ctx.Done():
		log.Info("shutting down")
	case runErr = <-errc:
		log.Error("server failed; shutting down", "err", runErr)
	}
	stopping.Store(true)

	done := make(chan struct{})
	go func() { _ = svc.GracefulStop(); close(done) }()
	select {
	case <-done:
	case <-time.After(cfg.shutdownTimeout):
		log.Warn("in-flight deliveries did not finish in time; stopping (they are redelivered)", "timeout", cfg.shutdownTimeout)
		_ = svc.Stop()
		<-done
	}
	sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = hsrv.Shutdown(sctx)
	log.Info("connector stopped", "counters", c.Counters().Snapshot())
	return runErr
}
