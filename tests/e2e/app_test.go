package e2e

import (
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
)

// testApp is a minimal Dapr HTTP app served by the test: it declares subscriptions and records
// deliveries; fail decides per delivery whether to answer with an error (daprd then reports the
// failure to the component, which redelivers).
type testApp struct {
	port int
	subs []map[string]any

	mu        sync.Mutex
	got       []string // payloads in delivery order (redeliveries included)
	delivered chan string
	fail      func(payload string, attempt int) bool
	block     chan struct{} // when non-nil, deliveries wait for it to close
	attempts  map[string]int
}

func newTestApp(t *testing.T, subs ...map[string]any) *testApp {
	a := &testApp{subs: subs, delivered: make(chan string, 10000), attempts: map[string]int{}}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a.port = l.Addr().(*net.TCPAddr).Port
	mux := http.NewServeMux()
	mux.HandleFunc("GET /dapr/subscribe", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(a.subs)
	})
	mux.HandleFunc("POST /", a.deliver) // any route: programmatic (/in) or declarative subscriptions
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return a
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
	a.mu.Unlock()
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
	a.mu.Unlock()
	a.delivered <- payload
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write([]byte(`{"status":"SUCCESS"}`))
}
