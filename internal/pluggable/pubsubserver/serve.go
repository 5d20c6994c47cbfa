package pubsubserver

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/dapr/components-contrib/pubsub"
	"github.com/dapr/kit/logger"
	"google.golang.org/grpc"
)

// Run serves the pub/sub component on the unix socket socket (replacing a stale file there) until
// SIGINT, SIGTERM, SIGHUP or SIGQUIT, or until serving fails. On the signal it stops accepting
// connections and removes the socket, and returns nil while the streams already open go on: the
// caller then closes the instances (their graceful shutdown: running handlers still get daprd's
// acks) and exits. That is the lifecycle components-go-sdk v0.3.0's Run has, which daprd-watch,
// the tests and the images rely on.
func Run(socket string, log logger.Logger, newInstance func() pubsub.PubSub) error {
	if err := os.Remove(socket); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("removing the stale socket %s: %w", socket, err)
	}
	lis, err := net.Listen("unix", socket)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", socket, err)
	}
	log.Infof("serving the pub/sub component on %s", socket)
	s := grpc.NewServer()
	Register(s, log, newInstance)

	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP, syscall.SIGQUIT)
	defer signal.Stop(sig)
	served := make(chan error, 1)
	go func() { served <- s.Serve(lis) }()
	select {
	case err := <-served:
		return fmt.Errorf("serving on %s: %w", socket, err)
	case got := <-sig:
		log.Infof("%v: no longer accepting connections on %s", got, socket)
		_ = lis.Close() // removes the socket file; grpc's Serve returns, open streams go on
		return nil
	}
}
