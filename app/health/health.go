// Package health serves the app's HTTP health and metrics endpoints.
package health

import (
	"fmt"
	"net/http"
	"sort"
)

// Handler returns an http.Handler with:
//   - GET /healthz: 200 "ok" while ready returns nil, else 503 with the reason;
//   - GET /metrics: one "mqdapr_connector_<name>_total <value>" line per counter, sorted
//     (Prometheus text format).
//
// ready and counters are called on every request and must be safe for concurrent use.
func Handler(ready func() error, counters func() map[string]int64) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if err := ready(); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /metrics", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
		c := counters()
		names := make([]string, 0, len(c))
		for n := range c {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			fmt.Fprintf(w, "# TYPE mqdapr_connector_%s_total counter\nmqdapr_connector_%s_total %d\n", n, n, c[n])
		}
	})
	return mux
}
