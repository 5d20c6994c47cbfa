package health

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
)

func TestHealthAndMetrics(t *testing.T) {
	var notReady atomic.Bool
	srv := httptest.NewServer(Handler(func() error {
		if notReady.Load() {
			return errors.New("shutting down")
		}
		return nil
	}, func() map[string]int64 { return map[string]int64{"written": 3, "received": 4} }))
	defer srv.Close()
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("/healthz %d %q", code, body)
	}
	notReady.Store(true)
	if code, body := get("/healthz"); code != 503 || !strings.Contains(body, "shutting down") {
		t.Fatalf("/healthz %d %q", code, body)
	}
	code, body := get("/metrics")
	if code != 200 || !strings.Contains(body, "mqdapr_connector_received_total 4\n") ||
		strings.Index(body, "received") > strings.Index(body, "written") {
		t.Fatalf("/metrics %d %q", code, body)
	}
}
