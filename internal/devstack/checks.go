package devstack

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/mqdapr/mqdapr/internal/pluggable"
)

// WaitTCP waits until addr accepts connections.
func WaitTCP(addr string) func(ctx context.Context) error {
	return func(ctx context.Context) error {
		return poll(ctx, func() error {
			c, err := net.DialTimeout("tcp", addr, time.Second)
			if err == nil {
				c.Close()
			}
			return err
		})
	}
}

// WaitHTTP waits until url answers 2xx.
func WaitHTTP(url string) func(ctx context.Context) error {
	return func(ctx context.Context) error { return poll(ctx, func() error { return getOK(ctx, url) }) }
}

// CheckHTTP is one health probe of url.
func CheckHTTP(url string) func(ctx context.Context) error {
	return func(ctx context.Context) error { return getOK(ctx, url) }
}

func getOK(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("%s: HTTP %d", url, resp.StatusCode)
	}
	return nil
}

// WaitSocket waits until a pluggable component answers Ping on its unix socket.
func WaitSocket(path string, pubsub bool) func(ctx context.Context) error {
	check := PingSocket(path, pubsub)
	return func(ctx context.Context) error { return poll(ctx, func() error { return check(ctx) }) }
}

// PingSocket is one health probe of a pluggable component: the gRPC Ping every component serves.
func PingSocket(path string, pubsub bool) func(ctx context.Context) error {
	kind := pluggable.StateStore
	if pubsub {
		kind = pluggable.PubSub
	}
	return func(ctx context.Context) error {
		_, err := pluggable.Ping(ctx, path, kind)
		return err
	}
}

func poll(ctx context.Context, f func() error) error {
	for {
		err := f()
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%w (last: %v)", ctx.Err(), err)
		case <-time.After(100 * time.Millisecond):
		}
	}
}
