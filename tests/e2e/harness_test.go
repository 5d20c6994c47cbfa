// Package e2e runs mqdapr's real processes (the embedded broker, both pluggable components, a real
// daprd and an app) on free loopback ports and temporary folders, and checks the whole chain.
package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

// bins are the project's binaries, built once for the package by TestMain.
var bins struct {
	dir, daprd, root string
	// daprd115 is a daprd 1.15.0 (concurrent dispatch of pluggable pub/sub messages) from
	// $MQDAPR_DAPRD_V1_15, for the tests that compare daprd versions; "" skips them.
	daprd115 string
}

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "mqdapr-e2e-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	bins.dir = dir
	root, _ := filepath.Abs("../..")
	bins.root = root
	build := exec.Command("go", "build", "-o", dir+"/", "./cmd/mqbroker", "./cmd/pubsub-mqtt5", "./cmd/state-kv", "./cmd/devicesim", "./cmd/mqdapr-run", "./app")
	build.Dir, build.Stdout, build.Stderr = root, os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		return 1
	}
	if out, err := exec.Command(filepath.Join(root, "scripts", "daprd.sh")).Output(); err == nil {
		bins.daprd = strings.TrimSpace(string(out))
	} else if os.Getenv("CI") != "" {
		fmt.Fprintln(os.Stderr, "scripts/daprd.sh could not provide daprd:", err)
		return 1
	}
	bins.daprd115 = os.Getenv("MQDAPR_DAPRD_V1_15")
	return m.Run()
}

func needDaprd(t testing.TB) {
	if bins.daprd == "" {
		t.Skip("no daprd: run scripts/daprd.sh (make test does) to enable the end-to-end tests")
	}
}

// proc is a child process with its output in a log file, prefixed in test failures.
type proc struct {
	t    testing.TB
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func start(t testing.TB, name, logDir string, env []string, bin string, args ...string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, log: filepath.Join(logDir, name+".log"), done: make(chan struct{})}
	f, err := os.OpenFile(p.log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", name, err)
	}
	go func() { _ = p.cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.kill(syscall.SIGKILL)
		if t.Failed() {
			b, _ := os.ReadFile(p.log)
			lines := strings.Split(strings.TrimSpace(string(b)), "\n")
			if len(lines) > 40 {
				lines = lines[len(lines)-40:]
			}
			t.Logf("--- last lines of %s ---\n%s", name, strings.Join(lines, "\n"))
		}
	})
	return p
}

// kill sends sig and waits for the process to end.
func (p *proc) kill(sig syscall.Signal) {
	testutil.Stop(p.cmd.Process, p.done, sig, 20*time.Second)
}

func (p *proc) exited() <-chan struct{} { return p.done }

// stack is one broker with the components and daprd instances around it.
type stack struct {
	t        testing.TB
	dir      string
	mqttPort int
	broker   *proc
	// brokerArgs are more flags of mqbroker (newStackArgs).
	brokerArgs []string
	// net, when set (newAuthStackOn), is the components' own network namespace: the broker listens
	// on net.hostIP, which the components reach through a veth pair and everything else directly.
	net *compNet
	// auth: the broker requires a user name and password and applies stackACL (enableAuth); the
	// stack's components and publishers carry their credentials.
	auth bool
}

func newStack(t testing.TB) *stack {
	t.Helper()
	return newStackArgs(t)
}

// newStackArgs is newStack with more flags of mqbroker.
func newStackArgs(t testing.TB, brokerArgs ...string) *stack {
	t.Helper()
	needDaprd(t)
	s := &stack{t: t, dir: t.TempDir(), mqttPort: testutil.FreePort(t), brokerArgs: brokerArgs}
	s.startBroker()
	return s
}

// newAuthStack is newStackArgs with authentication and authorization (enableAuth): a password
// file and an ACL, the credentials in the components' metadata and the publishers' CONNECT.
func newAuthStack(t testing.TB, brokerArgs ...string) *stack {
	t.Helper()
	return newAuthStackOn(t, nil, brokerArgs...)
}

// newAuthStackOn is newAuthStack with the components in net (nil: the host's namespace): in a
// network namespace of their own (compNet), the network between them and the broker can fail.
// Off loopback (on the veth pair's address) the broker requires authentication, as deployed.
func newAuthStackOn(t testing.TB, net *compNet, brokerArgs ...string) *stack {
	t.Helper()
	needDaprd(t)
	s := &stack{t: t, dir: t.TempDir(), mqttPort: testutil.FreePort(t), net: net, brokerArgs: brokerArgs}
	s.enableAuth()
	s.startBroker()
	return s
}

func (s *stack) brokerHost() string {
	if s.net != nil {
		return s.net.hostIP
	}
	return "127.0.0.1"
}

func (s *stack) mqttURL() string { return fmt.Sprintf("mqtt://%s:%d", s.brokerHost(), s.mqttPort) }

func (s *stack) startBroker() {
	addr := fmt.Sprintf("%s:%d", s.brokerHost(), s.mqttPort)
	s.broker = start(s.t, "broker", s.dir, nil, filepath.Join(bins.dir, "mqbroker"),
		append([]string{"-addr", addr, "-data-dir", filepath.Join(s.dir, "broker-data")}, s.brokerArgs...)...)
	testutil.WaitListening(s.t, addr, 10*time.Second, s.broker.exited())
}

// startComponent starts a component process of the stack: inside the components' network
// namespace when the stack has one.
func (s *stack) startComponent(name string, env []string, bin string) *proc {
	if s.net != nil {
		b, args := s.net.wrap(bin)
		return start(s.t, name, s.dir, env, b, args...)
	}
	return start(s.t, name, s.dir, env, bin)
}

// replica is what runs beside one app replica: its components (one socket folder) and daprd.
type replica struct {
	s                  *stack
	name, sockets, res string
	httpPort, grpcPort int
	pubsub, state      *proc
	daprd              *proc
	daprdBin           string // "" means bins.daprd
	hasState           bool
}

// newReplica writes the Component YAMLs for a replica; start its processes with startComponents
// and startDaprd.
func (s *stack) newReplica(name string, pubsubMeta map[string]string) *replica {
	r := &replica{s: s, name: name}
	// Unix socket paths are limited to 108 bytes: keep the folder short.
	sockets, err := os.MkdirTemp("", "mqd-")
	if err != nil {
		s.t.Fatal(err)
	}
	s.t.Cleanup(func() { os.RemoveAll(sockets) })
	r.sockets = sockets
	r.res = filepath.Join(s.dir, name+"-resources")
	if err := os.MkdirAll(r.res, 0o755); err != nil {
		s.t.Fatal(err)
	}
	md := s.credentials(map[string]string{"url": s.mqttURL(), "clientID": name, "connectTimeout": "10s"}, connectorUser)
	for k, v := range pubsubMeta {
		md[k] = v
	}
	writeComponent(s.t, filepath.Join(r.res, "pubsub.yaml"), "mqtt", "pubsub.mqttv5", md)
	return r
}

// withState adds the state store component to the replica.
func (r *replica) withState() *replica {
	writeComponent(r.s.t, filepath.Join(r.res, "state.yaml"), "kv", "state.mqttkv",
		r.s.credentials(map[string]string{"url": r.s.mqttURL(), "clientID": r.name, "connectTimeout": "10s"}, connectorUser))
	r.hasState = true
	return r
}

func writeComponent(t testing.TB, path, name, typ string, md map[string]string) {
	var b strings.Builder
	fmt.Fprintf(&b, "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata:\n  name: %s\nspec:\n  type: %s\n  version: v1\n  metadata:\n", name, typ)
	for k, v := range md {
		fmt.Fprintf(&b, "    - name: %s\n      value: %q\n", k, v)
	}
	if err := os.WriteFile(path, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func (r *replica) socketEnv() []string {
	return []string{"DAPR_COMPONENT_SOCKETS_FOLDER=" + r.sockets, "DAPR_COMPONENTS_SOCKETS_FOLDER=" + r.sockets}
}

// startComponents starts both component processes and waits for their sockets.
func (r *replica) startComponents() {
	r.startPubsub()
	if r.hasState {
		r.startState()
	}
}

// startPubsub starts (or restarts) the pub/sub component and waits for its socket.
func (r *replica) startPubsub() {
	sock := filepath.Join(r.sockets, "mqttv5.sock")
	_ = os.Remove(sock) // a kill -9 leaves the socket behind
	// The record of the session's filters (stateDir's default) stays inside the scenario's folder.
	env := append(r.socketEnv(), "XDG_STATE_HOME="+filepath.Join(r.s.dir, "state"))
	r.pubsub = r.s.startComponent(r.name+"-pubsub", env, filepath.Join(bins.dir, "pubsub-mqtt5"))
	waitFile(r.s.t, sock, 20*time.Second)
}

// startState starts (or restarts) the state component and waits for its socket.
func (r *replica) startState() {
	sock := filepath.Join(r.sockets, "mqttkv.sock")
	_ = os.Remove(sock)
	r.state = r.s.startComponent(r.name+"-state", r.socketEnv(), filepath.Join(bins.dir, "state-kv"))
	waitFile(r.s.t, sock, 20*time.Second)
}

// startDaprd starts daprd for the replica (appPort 0: no app) and waits until it is healthy.
func (r *replica) startDaprd(appID string, appPort int, appProtocol string) {
	r.startDaprdNoWait(appID, appPort, appProtocol)
	r.waitDaprd()
}

// waitDaprd waits until the replica's daprd is healthy.
func (r *replica) waitDaprd() {
	waitHTTP(r.s.t, fmt.Sprintf("http://127.0.0.1:%d/v1.0/healthz", r.httpPort), 60*time.Second, r.daprd.exited())
}

// startDaprdNoWait starts daprd for the replica and returns at once.
func (r *replica) startDaprdNoWait(appID string, appPort int, appProtocol string) {
	t := r.s.t
	if r.httpPort == 0 {
		r.httpPort = testutil.FreePort(t)
	}
	if r.grpcPort == 0 { // an app may have been told the port already
		r.grpcPort = testutil.FreePort(t)
	}
	args := []string{
		"--app-id", appID, "--resources-path", r.res,
		"--dapr-http-port", fmt.Sprint(r.httpPort), "--dapr-grpc-port", fmt.Sprint(r.grpcPort),
		"--dapr-internal-grpc-port", fmt.Sprint(testutil.FreePort(t)),
		"--metrics-port", fmt.Sprint(testutil.FreePort(t)),
		"--dapr-listen-addresses", "127.0.0.1", "--log-level", "info",
	}
	if appPort > 0 {
		args = append(args, "--app-port", fmt.Sprint(appPort), "--app-protocol", appProtocol)
	}
	bin := bins.daprd
	if r.daprdBin != "" {
		bin = r.daprdBin
	}
	r.daprd = start(t, r.name+"-daprd", r.s.dir, r.socketEnv(), bin, args...)
}

func (r *replica) daprURL(path string) string {
	return fmt.Sprintf("http://127.0.0.1:%d%s", r.httpPort, path)
}

func waitFile(t testing.TB, path string, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if _, err := os.Stat(path); err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s did not appear within %s", path, timeout)
		}
		time.Sleep(20 * time.Millisecond) // polling interval
	}
}

func waitHTTP(t testing.TB, url string, timeout time.Duration, exited <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		resp, err := http.Get(url)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode/100 == 2 {
				return
			}
		}
		select {
		case <-exited:
			t.Fatalf("process exited before %s answered", url)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not healthy within %s (last error %v)", url, timeout, err)
		}
		time.Sleep(50 * time.Millisecond) // polling interval
	}
}

// logContains reports whether a process log has a line containing s.
func logContains(path, s string) bool { return logCount(path, s) > 0 }

// logCount is the number of lines of a process log that contain s.
func logCount(path, s string) int {
	f, err := os.Open(path)
	if err != nil {
		return 0
	}
	defer f.Close()
	n := 0
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if strings.Contains(sc.Text(), s) {
			n++
		}
	}
	return n
}
