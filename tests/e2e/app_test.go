package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"
)

// testApp is a minimal Dapr HTTP app served by the test: it declares subscriptions and records
// deliveries; fail decides per delivery whether to answer with an error (daprd then reports the
// failure to the component, which redelivers).
type testApp struct {
	port int
	subs []map[string]any
	srv  *http.Server

	mu        sync.Mutex
	got       []string // payloads in delivery order (redeliveries included)
	delivered chan string
	fail      func(payload string, attempt int) bool
	block     chan struct{} // when non-nil, deliveries wait for it to close
	hold      chan struct{} // when non-nil, deliveries wait for it once holdAfter payloads were delivered
	holdAfter int
	attempts  map[string]int
	routes    map[string]string // payload → the route of its last successful delivery

	// barrier > 0 makes every delivery wait until barrier deliveries are in the handler at once
	// (a rendezvous: it proves they overlap) or until barrierTimeout; once reached, it is open.
	barrier        int
	barrierTimeout time.Duration
	barrierUp      chan struct{} // closed when the rendezvous happened
	inHandler      int           // deliveries in the handler now
	maxInHandler   int           // the most seen at once
	work           time.Duration // simulated work per delivery (benchmarks only)
}

func newTestApp(t testing.TB, subs ...map[string]any) *testApp {
	a := &testApp{subs: subs, delivered: make(chan string, 100000), attempts: map[string]int{}, routes: map[string]string{}, barrierUp: make(chan struct{})}
	a.serve(t, "127.0.0.1:0")
	return a
}

// serve starts the app's HTTP server on addr.
func (a *testApp) serve(t testing.TB, addr string) {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	a.port = l.Addr().(*net.TCPAddr).Port
	mux := http.NewServeMux()
	mux.HandleFunc("GET /dapr/subscribe", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		a.mu.Lock()
		subs := a.subs // replaced, never changed in place, by tests that restart daprd with others
		a.mu.Unlock()
		_ = json.NewEncoder(w).Encode(subs)
	})
	mux.HandleFunc("POST /", a.deliver) // any route: programmatic (/in) or declarative subscriptions
	srv := &http.Server{Handler: mux}
	a.mu.Lock()
	a.srv = srv
	a.mu.Unlock()
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
}

// crash stops the app as kill -9 would: the listener and every connection close at once, and
// the deliveries in progress never answer.
func (a *testApp) crash() {
	a.mu.Lock()
	srv := a.srv
	a.mu.Unlock()
	_ = srv.Close()
}

// restart serves the app again on its port, as a restarted process would.
func (a *testApp) restart(t *testing.T) {
	a.serve(t, fmt.Sprintf("127.0.0.1:%d", a.port))
}

// inFlight returns how many deliveries are in the handler now.
func (a *testApp) inFlight() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.inHandler
}

// rendezvous waits, for a delivery that just entered the handler, until a.barrier deliveries are
// in it at once or barrierTimeout passes (then the test's assertion on maxInHandler fails).
func (a *testApp) rendezvous(ctx context.Context) {
	a.mu.Lock()
	if a.barrier == 0 {
		a.mu.Unlock()
		return
	}
	if a.inHandler >= a.barrier {
		select {
		case <-a.barrierUp:
		default:
			close(a.barrierUp)
		}
	}
	up, timeout := a.barrierUp, a.barrierTimeout
	a.mu.Unlock()
	select {
	case <-up:
	case <-time.After(timeout):
	case <-ctx.Done():
	}
}

// rawSub subscribes to topic with raw payloads (devices publish plain JSON, not CloudEvents).
func rawSub(topic string, extra map[string]string) map[string]any {
	md := map[string]string{"rawPayload": "true"}
	for k, v := range extra {
		md[k] = v
	}
	return map[string]any{"pubsubname": "mqtt", "topic": topic, "route": "/in", "metadata": md}
}

func (a *testApp) deliver(w http.ResponseWriter, r *http.Request) {
	body, _ := io.ReadAll(r.Body)
	var ce struct {
		Data       json.RawMessage `json:"data"`
		DataBase64 string          `json:"data_base64"`
	}
	payload := string(body)
	if json.Unmarshal(body, &ce) == nil {
		switch {
		case ce.DataBase64 != "":
			b, _ := base64.StdEncoding.DecodeString(ce.DataBase64)
			payload = string(b)
		case len(ce.Data) > 0:
			var s string
			if json.Unmarshal(ce.Data, &s) == nil {
				payload = s
			} else {
				payload = string(ce.Data)
			}
		}
	}
	a.mu.Lock()
	a.attempts[payload]++
	attempt := a.attempts[payload]
	fail := a.fail
	block := a.block
	if block == nil && a.hold != nil && len(a.routes) >= a.holdAfter {
		block = a.hold
	}
	a.inHandler++
	a.maxInHandler = max(a.maxInHandler, a.inHandler)
	work := a.work
	a.mu.Unlock()
	defer func() {
		a.mu.Lock()
		a.inHandler--
		a.mu.Unlock()
	}()
	a.rendezvous(r.Context())
	if work > 0 {
		time.Sleep(work) // simulated work of a handler (benchmarks), not synchronisation
	}
	if block != nil {
		select {
		case <-block:
		case <-r.Context().Done():
			return
		}
	}
	if fail != nil && fail(payload, attempt) {
		http.Error(w, fmt.Sprintf("simulated failure of %q", payload), http.StatusInternalServerError)
		return
	}
	a.mu.Lock()
	a.got = append(a.got, payload)
	a.routes[payload] = r.URL.Path
	a.mu.Unlock()
	a.delivered <- payload
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"status":"SUCCESS"}`))
}
