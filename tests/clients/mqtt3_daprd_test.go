package clients

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mqdapr/mqdapr/internal/devstack"
	"github.com/mqdapr/mqdapr/internal/testutil"
)

// daprApp is a minimal Dapr HTTP app: it declares one subscription (raw payloads) and sends each
// delivered payload to got.
type daprApp struct {
	port int
	got  chan string
}

func startDaprApp(t testing.TB, pubsub, topic string) *daprApp {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &daprApp{port: l.Addr().(*net.TCPAddr).Port, got: make(chan string, 10000)}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /dapr/subscribe", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode([]map[string]any{{
			"pubsubname": pubsub, "topic": topic, "route": "/in",
			// Devices publish plain payloads, not CloudEvents: daprd wraps them (data_base64).
			"metadata": map[string]string{"rawPayload": "true"},
		}})
	})
	mux.HandleFunc("POST /in", func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		var ce struct {
			DataBase64 string `json:"data_base64"`
		}
		if err := json.Unmarshal(body, &ce); err != nil || ce.DataBase64 == "" {
			http.Error(w, fmt.Sprintf("want a CloudEvent with data_base64 (rawPayload), got %q", body), http.StatusBadRequest)
			return
		}
		b, err := base64.StdEncoding.DecodeString(ce.DataBase64)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		a.got <- string(b)
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"SUCCESS"}`))
	})
	srv := &http.Server{Handler: mux}
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(func() { _ = srv.Close() })
	return a
}

// daprd is a real daprd (scripts/daprd.sh --cached) with the app above and one component file.
type daprd struct {
	httpPort int
	cmd      *exec.Cmd
	done     chan struct{}
}

// startDaprd writes the Component (name, type, metadata) into a resources folder and starts daprd
// for an HTTP app on appPort; it returns once daprd's health endpoint answers 2xx.
func startDaprd(t testing.TB, name, typ string, md map[string]string, appPort int) *daprd {
	t.Helper()
	if bins.daprd == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("scripts/daprd.sh --cached has no daprd; make test builds it first (scripts/daprd.sh)")
		}
		t.Skip("no daprd: run scripts/daprd.sh (make test does) to enable this test")
	}
	dir := t.TempDir()
	res := filepath.Join(dir, "resources")
	if err := os.MkdirAll(res, 0o755); err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: %s\nspec:\n  type: %s\n  version: v1\n  metadata:\n", name, typ)
	for k, v := range md {
		fmt.Fprintf(&b, "    - name: %s\n      value: %q\n", k, v)
	}
	if err := os.WriteFile(filepath.Join(res, name+".yaml"), []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	d := &daprd{httpPort: testutil.FreePort(t), done: make(chan struct{})}
	logPath := filepath.Join(dir, "daprd.log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	d.cmd = exec.Command(bins.daprd,
		"--app-id", "clients", "--resources-path", res,
		"--app-port", fmt.Sprint(appPort), "--app-protocol", "http",
		"--dapr-http-port", fmt.Sprint(d.httpPort), "--dapr-grpc-port", fmt.Sprint(testutil.FreePort(t)),
		"--dapr-internal-grpc-port", fmt.Sprint(testutil.FreePort(t)),
		"--metrics-port", fmt.Sprint(testutil.FreePort(t)),
		"--dapr-listen-addresses", "127.0.0.1", "--log-level", "info")
	// No pluggable components here: an empty socket folder of its own.
	d.cmd.Env = append(os.Environ(), "DAPR_COMPONENTS_SOCKETS_FOLDER="+filepath.Join(dir, "sockets"))
	d.cmd.Stdout, d.cmd.Stderr = f, f
	if err := d.cmd.Start(); err != nil {
		t.Fatalf("start daprd: %v", err)
	}
	go func() { _ = d.cmd.Wait(); f.Close(); close(d.done) }()
	t.Cleanup(func() {
		testutil.Stop(d.cmd.Process, d.done, syscall.SIGKILL, 20*time.Second)
		if t.Failed() {
			log, _ := os.ReadFile(logPath)
			t.Logf("--- daprd log (last lines) ---\n%s", tail(string(log), 40))
		}
	})
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	go func() {
		select {
		case <-d.done:
			cancel()
		case <-ctx.Done():
		}
	}()
	if err := devstack.WaitHTTP(d.url("/v1.0/healthz"))(ctx); err != nil {
		t.Fatalf("daprd not healthy: %v", err)
	}
	return d
}

func (d *daprd) url(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", d.httpPort, path)
}

// publish publishes payload as a raw message through daprd's HTTP API; it fails the test unless
// daprd answers 204 (the component published it).
func (d *daprd) publish(t testing.TB, pubsub, topic, payload string) {
	t.Helper()
	resp, err := http.Post(d.url("/v1.0/publish/"+pubsub+"/"+topic+"?metadata.rawPayload=true"), "application/json", bytes.NewBufferString(payload))
	if err != nil {
		t.Fatalf("publish through daprd: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		t.Fatalf("publish through daprd: HTTP %d %s", resp.StatusCode, body)
	}
}

// TestDaprMQTT3ThroughDaprd: Dapr's in-tree pubsub.mqtt3 (MQTT 3.1.1, paho.mqtt.golang) inside a
// real daprd works against the broker end to end: messages published through daprd's HTTP API, and
// readings a 3.1.1 device (mosquitto_pub -V mqttv311) publishes to the topic, reach the app's
// subscription, each of them (QoS 1, persistent session: cleanSession false).
func TestDaprMQTT3ThroughDaprd(t *testing.T) {
	forEachBroker(t, v311, func(t *testing.T, b brokerUnderTest) {
		const pubsub, topic, n = "mqtt3", "readings", 20
		app := startDaprApp(t, pubsub, topic)
		d := startDaprd(t, pubsub, "pubsub.mqtt3", map[string]string{
			"url": "tcp://" + b.Addr(), "qos": "1", "cleanSession": "false", "consumerID": "clients",
		}, app.port)

		// daprd answers healthz before its subscription is in the broker: probe until one arrives.
		deadline := time.Now().Add(60 * time.Second)
		for probed := false; !probed; {
			if time.Now().After(deadline) {
				t.Fatal("no probe message reached the app through pubsub.mqtt3 within 60s")
			}
			d.publish(t, pubsub, topic, "probe")
			select {
			case <-app.got:
				probed = true
			case <-time.After(500 * time.Millisecond): // probe interval, not synchronisation
			}
		}

		fromDapr := seqPayloads("dapr", n)
		for _, p := range fromDapr {
			d.publish(t, pubsub, topic, p)
		}
		fromDevice := seqPayloads("device", n)
		publish(t, b, v311, fromDevice, "-q", "1", "-t", topic)

		want := map[string]bool{}
		for _, p := range append(fromDapr, fromDevice...) {
			want[p] = true
		}
		got, dups := map[string]bool{}, 0
		timeout := time.After(clientTimeout * 3)
		for len(got) < len(want) {
			select {
			case p := <-app.got:
				switch {
				case p == "probe":
				case !want[p]:
					t.Fatalf("the app received %q, which nobody published", p)
				case got[p]:
					dups++
				default:
					got[p] = true
				}
			case <-timeout:
				var missing []string
				for p := range want {
					if !got[p] {
						missing = append(missing, p)
					}
				}
				t.Fatalf("%d of %d messages reached the app; missing %q", len(got), len(want), missing)
			}
		}
		if dups > 0 {
			t.Logf("%d duplicate deliveries (QoS 1: at least once)", dups)
		}
	})
}
