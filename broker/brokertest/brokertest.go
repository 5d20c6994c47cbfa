// Package brokertest starts mqdapr's embedded broker for tests in other packages, as
// net/http/httptest does for net/http: in process, with a data directory, on a loopback port.
package brokertest

import (
	"fmt"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/internal/testutil"
)

// Embedded is mqdapr's own broker, in process, with a data directory, on a fixed loopback port
// so that it can be stopped and started again like a separate process.
type Embedded struct {
	t    testing.TB
	Port int
	Dir  string
	b    *broker.Broker
	// mutate changes the options at every Start (StartWith); nil for the defaults.
	mutate func(*broker.Options)
}

// Start starts the embedded broker with durable persistence in a temporary folder.
func Start(t testing.TB) *Embedded { t.Helper(); return StartWith(t, nil) }

// StartWith is Start with the broker's options changed by mutate, at this start and every restart.
func StartWith(t testing.TB, mutate func(*broker.Options)) *Embedded {
	t.Helper()
	e := &Embedded{t: t, Port: testutil.FreePort(t), Dir: t.TempDir(), mutate: mutate}
	e.Start()
	t.Cleanup(e.Stop)
	return e
}

// Start (re)starts the broker on the same port and data directory.
func (e *Embedded) Start() {
	e.t.Helper()
	o := broker.NewDefaultOptions()
	o.Addr = fmt.Sprintf("127.0.0.1:%d", e.Port)
	o.DataDir = e.Dir
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if e.mutate != nil {
		e.mutate(o)
	}
	b, err := broker.New(o)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := b.Start(); err != nil {
		e.t.Fatal(err)
	}
	e.b = b
	testutil.WaitListening(e.t, e.Addr(), 10*time.Second, nil)
}

// Stop closes the broker (a clean shutdown; data stays in Dir).
func (e *Embedded) Stop() {
	if e.b != nil {
		_ = e.b.Close()
		e.b = nil
	}
}

// Addr is host:port.
func (e *Embedded) Addr() string { return fmt.Sprintf("127.0.0.1:%d", e.Port) }

// URL is the broker's mqtt:// address (the embedded broker in tests has no TLS listener).
func (e *Embedded) URL(bool) string { return "mqtt://" + e.Addr() }

// Broker is the running broker (nil while stopped), for its Stats.
func (e *Embedded) Broker() *broker.Broker { return e.b }
