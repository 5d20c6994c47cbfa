package bench

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/mqdapr/mqdapr/internal/devstack"
)

// brokerKind is the process behind a component, if any.
type brokerKind int

const (
	noBroker brokerKind = iota
	mosquitto
	mqbrokerMemory
	mqbrokerDisk
	redisMemory
	redisAOF
)

// stack is one contender's processes for one round: a broker, a component process, daprd, each
// in a fresh folder and on fresh loopback ports. Everything is stopped by close.
type stack struct {
	h        *harness
	dir      string
	sockets  string
	res      string
	ps       procs
	brokerAt string // host:port of the broker, when there is one
	// brokerMetrics is mqbroker's /metrics URL (its store commits are counted), "" for other brokers.
	brokerMetrics string
	daprHTTP      int
	daprGRPC      int
}

// newStack makes the folders of a stack.
func (h *harness) newStack(name string) (*stack, error) {
	dir, err := os.MkdirTemp(h.work, name+"-")
	if err != nil {
		return nil, err
	}
	// Unix socket paths are limited to 108 bytes: the socket folder stays short.
	sockets, err := os.MkdirTemp("", "mqb-")
	if err != nil {
		return nil, err
	}
	s := &stack{h: h, dir: dir, sockets: sockets, res: filepath.Join(dir, "resources")}
	if err := os.MkdirAll(s.res, 0o755); err != nil {
		os.RemoveAll(sockets)
		return nil, err
	}
	return s, nil
}

// close stops every process of the stack and removes its socket folder (the logs stay in the
// harness's work folder until the end).
func (s *stack) close() {
	s.ps.stopAll()
	os.RemoveAll(s.sockets)
}

// pids maps process name → pid of the stack's running processes.
func (s *stack) pids() map[string]int {
	s.ps.mu.Lock()
	defer s.ps.mu.Unlock()
	out := map[string]int{}
	for _, p := range s.ps.list {
		select {
		case <-p.done:
		default:
			out[p.name] = p.cmd.Process.Pid
		}
	}
	return out
}

// startBroker starts the broker of kind k on a free port.
func (s *stack) startBroker(ctx context.Context, k brokerKind) error {
	if k == noBroker {
		return nil
	}
	ports, err := freePorts(2)
	if err != nil {
		return err
	}
	s.brokerAt = fmt.Sprintf("127.0.0.1:%d", ports[0])
	var p *proc
	switch k {
	case mosquitto:
		// In memory (no persistence), the limits of the project's tests (internal/testutil).
		conf := filepath.Join(s.dir, "mosquitto.conf")
		lines := []string{
			fmt.Sprintf("listener %d 127.0.0.1", ports[0]),
			"allow_anonymous true",
			"persistence false",
			"max_queued_messages 100000",
			"max_inflight_messages 0",
			"user root", // as root Mosquitto would switch to user mosquitto
		}
		if err := os.WriteFile(conf, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
			return err
		}
		p, err = s.ps.start(s.dir, "mosquitto", "broker", nil, s.h.tools.mosquitto, "-c", conf)
	case mqbrokerMemory, mqbrokerDisk:
		metricsAt := fmt.Sprintf("127.0.0.1:%d", ports[1])
		s.brokerMetrics = "http://" + metricsAt + "/metrics"
		args := []string{"-addr", s.brokerAt, "-metrics-addr", metricsAt}
		if k == mqbrokerDisk {
			args = append(args, "-data-dir", filepath.Join(s.dir, "broker-data"))
		}
		p, err = s.ps.start(s.dir, "mqbroker", "broker", nil, s.h.bin("mqbroker"), args...)
	case redisMemory, redisAOF:
		args := []string{"--bind", "127.0.0.1", "--port", fmt.Sprint(ports[0]), "--dir", s.dir, "--save", ""}
		if k == redisAOF {
			args = append(args, "--appendonly", "yes", "--appendfsync", "always")
		} else {
			args = append(args, "--appendonly", "no")
		}
		p, err = s.ps.start(s.dir, "redis-server", "broker", nil, s.h.tools.redis, args...)
	}
	if err != nil {
		return err
	}
	return p.ready(ctx, 20*time.Second, devstack.WaitTCP(s.brokerAt))
}

// socketEnv points both the SDK (singular) and daprd (plural) at the stack's socket folder.
func (s *stack) socketEnv() []string {
	return []string{"DAPR_COMPONENT_SOCKETS_FOLDER=" + s.sockets, "DAPR_COMPONENTS_SOCKETS_FOLDER=" + s.sockets}
}

// startComponent starts one of the component programs (pubsub-mqtt5, state-kv, noop) and waits
// until it answers on its socket.
func (s *stack) startComponent(ctx context.Context, program string) error {
	return s.startComponentBin(ctx, program, "")
}

// startComponentBin is startComponent with another binary of the program (bin "": the one built
// for the run).
func (s *stack) startComponentBin(ctx context.Context, program, bin string) error {
	if bin == "" {
		bin = s.h.bin(program)
	}
	sock := map[string]string{"pubsub-mqtt5": "mqttv5", "state-kv": "mqttkv", "state-kv-base": "mqttkv", "noop": "noop"}[program]
	env := append(s.socketEnv(), "XDG_STATE_HOME="+filepath.Join(s.dir, "state"), "MQDAPR_LOG_LEVEL=warn")
	if dir := os.Getenv("BENCH_PROFILE_DIR"); dir != "" && program == "pubsub-mqtt5" {
		// A CPU and an allocation profile of the component's whole round (cmd/pubsub-mqtt5).
		env = append(env, "MQDAPR_PROFILE="+filepath.Join(dir, filepath.Base(s.dir)))
	}
	p, err := s.ps.start(s.dir, program, "component", env, bin)
	if err != nil {
		return err
	}
	path := filepath.Join(s.sockets, sock+".sock")
	return p.ready(ctx, 20*time.Second, devstack.WaitSocket(path, program != "state-kv" && program != "state-kv-base"))
}

// component writes a Component YAML into the stack's resources folder.
func (s *stack) component(name, typ string, md map[string]string) error {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: %s\nspec:\n  type: %s\n  version: v1\n  metadata:\n", name, typ)
	keys := make([]string, 0, len(md))
	for k := range md {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "    - name: %s\n      value: %q\n", k, md[k])
	}
	if len(md) == 0 {
		b.WriteString("    []\n")
	}
	return os.WriteFile(filepath.Join(s.res, name+".yaml"), []byte(b.String()), 0o644)
}

// startDaprd starts daprd (appPort 0: no app) on fresh ports and waits until it is healthy.
func (s *stack) startDaprd(ctx context.Context, daprd string, appPort int) error {
	ports, err := freePorts(4)
	if err != nil {
		return err
	}
	if s.daprGRPC == 0 { // an app may have been told the port already
		s.daprGRPC = ports[1]
	}
	s.daprHTTP = ports[0]
	args := []string{
		"--app-id", "bench", "--resources-path", s.res,
		"--dapr-http-port", fmt.Sprint(s.daprHTTP), "--dapr-grpc-port", fmt.Sprint(s.daprGRPC),
		"--dapr-internal-grpc-port", fmt.Sprint(ports[2]), "--metrics-port", fmt.Sprint(ports[3]),
		"--dapr-listen-addresses", "127.0.0.1", "--log-level", "warn",
	}
	if appPort > 0 {
		args = append(args, "--app-port", fmt.Sprint(appPort), "--app-protocol", "grpc")
	}
	p, err := s.ps.start(s.dir, "daprd", "daprd", s.socketEnv(), daprd, args...)
	if err != nil {
		return err
	}
	return p.ready(ctx, 90*time.Second, devstack.WaitHTTP(fmt.Sprintf("http://127.0.0.1:%d/v1.0/healthz", s.daprHTTP)))
}
