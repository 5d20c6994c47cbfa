// Command mqdapr-run is `make run`: the embedded broker (with its key-value store), both pluggable
// components, a real daprd, the sample connector app and the demo device publisher on this machine,
// with prefixed logs and a live progress line. It restarts daprd whenever a component restarts
// and stops everything cleanly on Ctrl-C, SIGTERM, SIGHUP or a broken output, leaving no stale
// socket; killed outright, it takes its processes with it. A start that finds a stale stack
// (another supervisor on the folder, its processes, a taken broker port, a served socket) says so
// and what to do; a socket nothing listens on is removed.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"

	"github.com/mqdapr/mqdapr/internal/devstack"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "sink" {
		if err := sink(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "mqdapr-run sink:", err)
			os.Exit(1)
		}
		return
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "mqdapr-run:", err)
		os.Exit(1)
	}
}

func run() error {
	fs := flag.NewFlagSet("mqdapr-run", flag.ContinueOnError)
	binDir := fs.String("bin", "bin", "folder of the project's binaries (make build)")
	runDir := fs.String("dir", ".run", "folder for the broker's data, the data lake, sockets and component files")
	mqttAddr := fs.String("mqtt", "127.0.0.1:1883", "broker listen address")
	rate := fs.Float64("rate", 5, "demo telemetry messages per second")
	devices := fs.Int("devices", 6, "demo devices")
	if err := fs.Parse(os.Args[1:]); err != nil {
		return err
	}
	root, _ := os.Getwd()
	abs := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(root, p)
	}
	bin, dir := abs(*binDir), abs(*runDir)

	// Every ending the supervisor can see stops the stack in order: Ctrl-C, SIGTERM, SIGHUP (the
	// terminal was closed) and a broken output (EPIPE: `make run | tee log` lost its reader; EIO: the
	// terminal is gone). SIGPIPE is caught so that a write to a broken stdout returns EPIPE instead
	// of killing the supervisor. Endings it cannot see (kill -9) take the processes with it
	// (internal/devstack/spawn.go).
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	sigs := make(chan os.Signal, 1)
	for _, sig := range []os.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
		// Started with it ignored (`nohup make run`, `make run &` from a script): keep ignoring it;
		// Notify would install a handler and end the stack when the terminal closes.
		if !signal.Ignored(sig) {
			signal.Notify(sigs, sig)
		}
	}
	defer signal.Stop(sigs)
	pipes := make(chan os.Signal, 1)
	signal.Notify(pipes, syscall.SIGPIPE) // the EPIPE write error is what counts (a health probe's socket may raise it too)
	defer signal.Stop(pipes)
	go func() {
		for {
			select {
			case sig := <-sigs:
				cancel(fmt.Errorf("signal %v", sig))
			case <-pipes:
			}
		}
	}()
	out := devstack.StopOnBrokenOutput(os.Stdout, func(err error) { cancel(fmt.Errorf("output closed: %w", err)) })
	sup := &devstack.Supervisor{Out: out}

	// A stale stack or socket is reported (or, a socket nothing listens on, removed) before anything
	// starts: otherwise the broker fails on a taken port and daprd hangs ~25 s on a stale socket.
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	lock, err := devstack.Lock(dir)
	if err != nil {
		return err
	}
	defer lock.Release()
	if lock.Stale != 0 {
		sup.Logf("an earlier mqdapr-run (pid %d) on %s ended without stopping (killed?); its processes ended with it", lock.Stale, dir)
	}
	sockets := devstack.SocketDir(dir)
	mqttURL := "mqtt://" + *mqttAddr
	if err := devstack.CheckAddrFree(*mqttAddr, "mqtt"); err != nil {
		return err
	}
	if err := devstack.Leftovers(bin, dir, sockets, mqttURL); err != nil {
		return err
	}
	removed, err := devstack.CleanSockets(sockets)
	for _, p := range removed {
		sup.Logf("removed stale socket %s (nothing listening: left by a run that was killed)", p)
	}
	if err != nil {
		return err
	}
	if err := os.MkdirAll(sockets, 0o700); err != nil { // unix socket paths must stay short
		return err
	}
	defer os.RemoveAll(sockets)

	daprd, err := exec.CommandContext(ctx, filepath.Join(root, "scripts", "daprd.sh")).Output()
	if err != nil {
		return fmt.Errorf("scripts/daprd.sh: %w", err)
	}
	lake, resources := filepath.Join(dir, "lake"), filepath.Join(dir, "resources")
	for _, d := range []string{lake, resources, filepath.Join(dir, "data")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	// The pub/sub component's record of its session's filters lives with the broker's data: both
	// describe the same session, and deleting the run folder ends both.
	if err := writeResources(resources, mqttURL, filepath.Join(dir, "state", "pubsub")); err != nil {
		return err
	}
	ports := freePorts(5)
	daprHTTP, daprGRPC, appPort, healthPort, metricsPort := ports[0], ports[1], ports[2], ports[3], ports[4]
	sockEnv := []string{"DAPR_COMPONENT_SOCKETS_FOLDER=" + sockets, "DAPR_COMPONENTS_SOCKETS_FOLDER=" + sockets}
	psSock, kvSock := filepath.Join(sockets, "mqttv5.sock"), filepath.Join(sockets, "mqttkv.sock")
	healthURL := fmt.Sprintf("http://127.0.0.1:%d", healthPort)

	self, err := os.Executable()
	if err != nil {
		return err
	}
	// Rejected (the app's) and dead-lettered (the component's) messages need a subscriber: a
	// publish nobody subscribes to is answered 0x10 and discarded, so the pub/sub fails it
	// (noMatchingSetting: fail) and the message is retried, holding up every later ack.
	deadLetters, sinkReady := filepath.Join(dir, "dead-letters.jsonl"), filepath.Join(dir, "sink.ready")
	os.Remove(sinkReady) // left by a run that was killed
	specs := []devstack.Spec{
		{Name: "broker", Path: filepath.Join(bin, "mqbroker"), Args: []string{"-addr", *mqttAddr, "-data-dir", filepath.Join(dir, "data")},
			Ready: devstack.WaitTCP(*mqttAddr)},
		{Name: "sink", Path: self, Args: []string{"sink", "-broker", mqttURL, "-client-id", "deadletters", "-file", deadLetters,
			"-ready", sinkReady, rejectedTopic, deadLetterTopic}, Ready: devstack.WaitFile(sinkReady), Cleanup: func() { os.Remove(sinkReady) }},
		{Name: "pubsub", Path: filepath.Join(bin, "pubsub-mqtt5"), Env: sockEnv, RestartsDaprd: true,
			Ready: devstack.WaitSocket(psSock, true), Healthy: devstack.PingSocket(psSock, true), Cleanup: func() { os.Remove(psSock) }},
		{Name: "state", Path: filepath.Join(bin, "state-kv"), Env: sockEnv, RestartsDaprd: true,
			Ready: devstack.WaitSocket(kvSock, false), Healthy: devstack.PingSocket(kvSock, false), Cleanup: func() { os.Remove(kvSock) }},
		{Name: "app", Path: filepath.Join(bin, "app"), Args: []string{
			"-app-port", fmt.Sprint(appPort), "-dapr-grpc-port", fmt.Sprint(daprGRPC),
			"-health-addr", fmt.Sprintf("127.0.0.1:%d", healthPort), "-lake", lake, "-replica", "replica-0",
			"-deadletter-topic", rejectedTopic, "-telemetry-partitions", fmt.Sprint(telemetryPartitions),
		}, Ready: devstack.WaitHTTP(healthURL + "/healthz")},
		{Name: "daprd", Path: strings.TrimSpace(string(daprd)), Env: sockEnv, IsDaprd: true, Args: []string{
			"--app-id", "connector", "--resources-path", resources, "--app-port", fmt.Sprint(appPort), "--app-protocol", "grpc",
			"--dapr-http-port", fmt.Sprint(daprHTTP), "--dapr-grpc-port", fmt.Sprint(daprGRPC),
			"--dapr-internal-grpc-port", fmt.Sprint(freePorts(1)[0]), "--metrics-port", fmt.Sprint(metricsPort),
			"--dapr-listen-addresses", "127.0.0.1", "--log-level", "warn",
		}, Ready: devstack.WaitHTTP(fmt.Sprintf("http://127.0.0.1:%d/v1.0/healthz", daprHTTP)),
			Healthy: devstack.CheckHTTP(fmt.Sprintf("http://127.0.0.1:%d/v1.0/healthz", daprHTTP))},
		{Name: "devices", Path: filepath.Join(bin, "devicesim"), Args: []string{
			"-broker", mqttURL, "-rate", fmt.Sprint(*rate), "-devices", fmt.Sprint(*devices), "-count", "0", "-invalid-every", "50",
		}},
	}

	go progress(ctx, sup, healthURL, lake, deadLetters)
	sup.Logf("starting: broker mqtt://%s, data %s, lake %s, rejected and dead letters %s (Ctrl-C stops everything)",
		*mqttAddr, filepath.Join(dir, "data"), lake, deadLetters)
	stopped := context.AfterFunc(ctx, func() { sup.Logf("stopping (%v)", context.Cause(ctx)) })
	defer stopped()
	err = sup.Run(ctx, specs)
	if ctx.Err() != nil {
		err = nil // stopped during start-up: not a failure of the stack
	}
	sup.Logf("stopped; data kept in %s", dir)
	return err
}

// sink is the stack's dead-letter consumer (devstack.RunSink), run as a supervised process of
// its own: `mqdapr-run sink -broker URL -client-id ID -file F -ready R topic...`.
func sink(args []string) error {
	fs := flag.NewFlagSet("mqdapr-run sink", flag.ContinueOnError)
	var o devstack.SinkOptions
	fs.StringVar(&o.BrokerURL, "broker", "mqtt://127.0.0.1:1883", "broker URL")
	fs.StringVar(&o.ClientID, "client-id", "deadletters", "client id part (mqdapr-run-<id>-sink)")
	fs.StringVar(&o.File, "file", "dead-letters.jsonl", "file the messages are appended to")
	fs.StringVar(&o.Ready, "ready", "", "file created once subscribed")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if o.Topics = fs.Args(); len(o.Topics) == 0 {
		return fmt.Errorf("no topic given: want one or more MQTT filters after the flags")
	}
	o.Log = slog.New(slog.NewTextHandler(os.Stderr, nil))
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	return devstack.RunSink(ctx, o)
}

// progress prints the app's counters every few seconds.
func progress(ctx context.Context, sup *devstack.Supervisor, healthURL, lake, deadLetters string) {
	t := time.NewTicker(3 * time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		resp, err := http.Get(healthURL + "/metrics")
		if err != nil {
			continue
		}
		var parts []string
		sc := bufio.NewScanner(resp.Body)
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) == 2 && !strings.HasPrefix(f[0], "#") {
				name := strings.TrimSuffix(strings.TrimPrefix(f[0], "mqdapr_connector_"), "_total")
				parts = append(parts, name+"="+f[1])
			}
		}
		resp.Body.Close()
		sort.Strings(parts)
		kept := 0
		if b, err := os.ReadFile(deadLetters); err == nil {
			kept = bytes.Count(b, []byte("\n"))
		}
		sup.Logf("progress: %s | lake: %s | dead letters kept: %d", strings.Join(parts, " "), lake, kept)
	}
}

// The app's topic for rejected messages (its -deadletter-topic default), the pub/sub's
// deadLetterTopic, and the pub/sub setting for what a publish answered 0x10 does.
const (
	rejectedTopic     = "connector/rejected"
	deadLetterTopic   = "connector/dead-letter"
	noMatchingSetting = "noMatchingSubscribers"
)

// telemetryPartitions is the app's -telemetry-partitions: daprd 1.16 hands one subscription's
// messages over one at a time, so telemetry goes as 8 partitions of pubsub.mqttv5, handled 8 at
// a time (the component's receiveMaximum, 16 by default, must be at least that). BENCHMARKS.md:
// 8 partitions reach about 0.6× the pub/sub floor where 4 reached 0.4×; the handler's time goes
// waiting for its claim and the lake's fsync, shared by the handlers in flight.
const telemetryPartitions = 8

func writeResources(dir, mqttURL, stateDir string) error {
	files := map[string]string{
		"pubsub.yaml": fmt.Sprintf(`apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: mqtt
spec:
  type: pubsub.mqttv5
  version: v1
  metadata:
    - name: url
      value: %q
    - name: clientID
      value: replica-0
    - name: deadLetterTopic
      value: %s
    - name: %s
      value: fail
    - name: stateDir
      value: %q
`, mqttURL, deadLetterTopic, noMatchingSetting, stateDir),
		"state.yaml": fmt.Sprintf(`apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: kv
spec:
  type: state.mqttkv
  version: v1
  metadata:
    - name: url
      value: %q
    - name: clientID
      value: replica-0
`, mqttURL),
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func freePorts(n int) []int {
	var ls []net.Listener
	var ports []int
	for range n {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	for _, l := range ls {
		l.Close()
	}
	return ports
}
