// Package secrets checks that no secret reaches a log or an error: the real mqbroker and the real
// component programs (pubsub-mqtt5, state-kv), built from this repository and run as processes,
// used with every kind of secret mqdapr handles (a password from the broker's password file, a
// client certificate's key given inline, a Kubernetes service-account token file that is rotated),
// rightly and wrongly, at debug level; every byte they write and every error daprd would get back
// over the socket is scanned for each secret, raw and encoded.
//
//	go test -race -count=1 ./tests/secrets/
//	SECRETS_DUMP=1 go test -count=1 -v ./tests/secrets/   (prints everything scanned)
package secrets

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	proto "github.com/dapr/dapr/pkg/proto/components/v1"
	pahomqtt "github.com/eclipse/paho.mqtt.golang"
	"github.com/stretchr/testify/require"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/kvservice"
	"github.com/mqdapr/mqdapr/broker/statestore"
	"github.com/mqdapr/mqdapr/internal/mqttconn"
	"github.com/mqdapr/mqdapr/internal/testutil"
)

// bins holds the programs TestMain built.
var bins struct{ mqbroker, pubsub, state string }

func TestMain(m *testing.M) { os.Exit(run(m)) }

func run(m *testing.M) int {
	dir, err := os.MkdirTemp("", "mqdapr-secrets-bin-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	build := exec.Command("go", "build", "-o", dir+"/", "./cmd/mqbroker", "./cmd/pubsub-mqtt5", "./cmd/state-kv")
	build.Dir, build.Stdout, build.Stderr = "../..", os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "build:", err)
		return 1
	}
	bins.mqbroker = filepath.Join(dir, "mqbroker")
	bins.pubsub = filepath.Join(dir, "pubsub-mqtt5")
	bins.state = filepath.Join(dir, "state-kv")
	return m.Run()
}

// proc is a program run for the test, its stdout and stderr collected together.
type proc struct {
	name string
	out  testutil.SyncBuffer
	cmd  *exec.Cmd
	done chan struct{}
}

func start(t *testing.T, name, path string, env []string, args ...string) *proc {
	t.Helper()
	p := &proc{name: name, done: make(chan struct{})}
	p.cmd = exec.Command(path, args...)
	p.cmd.Env = append(os.Environ(), env...)
	p.cmd.Stdout, p.cmd.Stderr = &p.out, &p.out
	require.NoError(t, p.cmd.Start())
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	t.Cleanup(func() { testutil.Stop(p.cmd.Process, p.done, syscall.SIGKILL, 0) })
	return p
}

// stop ends the process with SIGTERM (its shutdown logged too).
func (p *proc) stop() { testutil.Stop(p.cmd.Process, p.done, syscall.SIGTERM, 15*time.Second) }

// waitFor waits until the output holds substr and returns the line holding it.
func (p *proc) waitFor(t *testing.T, substr string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		out := p.out.String()
		if i := strings.Index(out, substr); i >= 0 {
			line, _, _ := strings.Cut(out[i:], "\n")
			return line
		}
		select {
		case <-p.done:
			t.Fatalf("%s exited before writing %q:\n%s", p.name, substr, out)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %q after 30 s:\n%s", p.name, substr, out)
		}
	}
}

func randomSecret(t *testing.T, prefix string) string {
	b := make([]byte, 18)
	_, err := rand.Read(b)
	require.NoError(t, err)
	return prefix + base64.RawURLEncoding.EncodeToString(b)
}

// secret is one secret and the forms it could leak in.
type secret struct {
	what  string
	forms map[string]string // form -> text
}

func newSecret(what string, value []byte) secret {
	s := secret{what: what, forms: map[string]string{
		"raw":        string(value),
		"base64":     base64.StdEncoding.EncodeToString(value),
		"base64url":  base64.RawURLEncoding.EncodeToString(value),
		"hex":        hex.EncodeToString(value),
		"Go-quoted":  strings.Trim(fmt.Sprintf("%q", value), `"`),
		"JSON bytes": strings.Trim(fmt.Sprintf("%v", value), "[]"),
	}}
	if block, _ := pem.Decode(value); block != nil {
		// A PEM key leaks by any line of its body as well as whole: the DER, base64 as in the
		// file, and each 64-character line.
		der := base64.StdEncoding.EncodeToString(block.Bytes)
		s.forms["DER base64"] = der
		s.forms["DER hex"] = hex.EncodeToString(block.Bytes)
		for i := 0; i+64 <= len(der); i += 64 {
			s.forms[fmt.Sprintf("PEM line %d", i/64+1)] = der[i : i+64]
		}
	}
	for k, v := range s.forms {
		if len(v) < 12 {
			delete(s.forms, k) // too short to be told from chance
		}
	}
	return s
}

// scan fails the test for every secret found in text, naming where.
func scan(t *testing.T, where, text string, secrets []secret) {
	t.Helper()
	for _, s := range secrets {
		for form, v := range s.forms {
			if i := strings.Index(text, v); i >= 0 {
				from, to := max(0, i-120), min(len(text), i+len(v)+40)
				t.Errorf("%s holds the %s (%s): …%s…", where, s.what, form, text[from:to])
			}
		}
	}
}

// satBroker accepts the K8S-SAT tokens it is given (mqbroker's own K8S-SAT support is checked by
// its own tests); it is the embedded broker over TCP, its log collected like the processes'.
type satBroker struct {
	mu    sync.Mutex
	valid map[string]bool
}

func (a *satBroker) Authenticate(_ context.Context, r *broker.AuthRequest) (broker.AuthResponse, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if r.Method != mqttconn.SATAuthMethod {
		return broker.AuthResponse{}, &broker.ReasonError{Code: 0x8C}
	}
	if !a.valid[string(r.Data)] {
		return broker.AuthResponse{}, &broker.ReasonError{Code: 0x87}
	}
	return broker.AuthResponse{Identity: "ns/sa"}, nil
}

// component is a component process and the gRPC connection to its socket.
type component struct {
	*proc
	cc *grpc.ClientConn
}

func startComponent(t *testing.T, name, path, socket string) component {
	t.Helper()
	folder := t.TempDir()
	p := start(t, name, path, []string{"DAPR_COMPONENT_SOCKETS_FOLDER=" + folder, "MQDAPR_LOG_LEVEL=debug"})
	sock := filepath.Join(folder, socket)
	require.Eventually(t, func() bool { _, err := os.Stat(sock); return err == nil }, 30*time.Second, 10*time.Millisecond, "%s", &p.out)
	cc, err := grpc.NewClient("unix://"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = cc.Close() })
	return component{proc: p, cc: cc}
}

// instance is the context of calls to the component instance called name, as daprd names it.
func instance(ctx context.Context, name string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "x-component-instance", name)
}

// One run with every secret in use, right and wrong, through both components and the broker.
func TestNoSecretInLogsOrErrors(t *testing.T) {
	dir := t.TempDir()
	password := randomSecret(t, "pw-")
	wrongPassword := randomSecret(t, "wrong-")
	token1, token2, stolen := randomSecret(t, "eyJ-sat1."), randomSecret(t, "eyJ-sat2."), randomSecret(t, "eyJ-stolen.")

	// The broker: a password file (bcrypt, written by `mqbroker passwd`), client certificates
	// optional on its TLS listener, an ACL, everything at debug level.
	pwFile := filepath.Join(dir, "passwd")
	pw := exec.Command(bins.mqbroker, "passwd", "-cost", "4", pwFile, "app")
	pw.Stdin = strings.NewReader(password + "\n")
	out, err := pw.CombinedOutput()
	require.NoError(t, err, "%s", out)
	scan(t, "mqbroker passwd output", string(out), []secret{newSecret("password", []byte(password))})
	pwData, err := os.ReadFile(pwFile)
	require.NoError(t, err)
	_, hash, _ := strings.Cut(strings.TrimSpace(string(pwData)), ":")

	ca := testutil.NewCA(t, "secrets CA")
	srvCert, srvKey := ca.Issue(t, "broker", true, "127.0.0.1")
	clientCert, clientKey := ca.Issue(t, "app-cert", false)
	_, otherKey := ca.Issue(t, "other", false)
	write := func(name string, data []byte) string {
		p := filepath.Join(dir, name)
		require.NoError(t, os.WriteFile(p, data, 0o600))
		return p
	}
	acl := write("acl", []byte("all\ntopic readwrite #\nkey readwrite \"\"\n"))
	mq := start(t, "mqbroker", bins.mqbroker, nil, "-addr", "127.0.0.1:0", "-tls-addr", "127.0.0.1:0",
		"-tls-cert", write("tls.crt", srvCert), "-tls-key", write("tls.key", srvKey),
		"-tls-client-ca", write("ca.crt", ca.PEM), "-tls-client-auth", "optional",
		"-password-file", pwFile, "-acl-file", acl, "-data-dir", filepath.Join(dir, "data"), "-log-level", "debug",
		"-metrics-addr", "127.0.0.1:0")
	addrs := strings.Fields(strings.Trim(strings.TrimPrefix(mq.waitFor(t, "listening ["), "listening "), "[]"))
	require.Len(t, addrs, 2, "TCP and TLS listeners")
	tcpURL, tlsURL := "mqtt://"+addrs[0], "mqtts://"+addrs[1]

	var satLog testutil.SyncBuffer
	sat := &satBroker{valid: map[string]bool{token1: true, token2: true}}
	o := broker.NewDefaultOptions()
	o.Addr = fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	o.Logger = slog.New(slog.NewTextHandler(&satLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
	o.Authenticator = sat
	engine, err := statestore.NewEngine(statestore.NewDefaultOptions())
	require.NoError(t, err)
	svc, err := kvservice.New(kvservice.Options{Engine: engine})
	require.NoError(t, err)
	o.Services = []broker.Service{svc}
	b, err := broker.New(o)
	require.NoError(t, err)
	require.NoError(t, b.Start())
	require.NoError(t, svc.Start(b))
	t.Cleanup(func() {
		_ = svc.Close()
		_ = b.Close()
		_ = engine.Close()
	})
	satURL := "mqtt://" + o.Addr
	tokenFile := write("mqtt-client-token", []byte(token1+"\n"))
	stolenFile := write("stolen-token", []byte(stolen))

	ps := startComponent(t, "pubsub-mqtt5", bins.pubsub, "mqttv5.sock")
	st := startComponent(t, "state-kv", bins.state, "mqttkv.sock")
	pubsub, state := proto.NewPubSubClient(ps.cc), proto.NewStateStoreClient(st.cc)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	var grpcErrors []string // what daprd (and a device) would get back and log
	type initCase struct {
		name  string
		props map[string]string
		ok    bool
	}
	common := func(extra map[string]string) map[string]string {
		m := map[string]string{"consumerID": "app", "connectTimeout": "3s"}
		for k, v := range extra {
			m[k] = v
		}
		return m
	}
	cases := []initCase{
		{"password", common(map[string]string{"url": tcpURL, "username": "app", "password": password, "clientID": "pw"}), true},
		{"wrong-password", common(map[string]string{"url": tcpURL, "username": "app", "password": wrongPassword, "clientID": "wpw"}), false},
		{"password-in-url", common(map[string]string{"url": "mqtt://app:" + password + "@" + addrs[0], "clientID": "url"}), false},
		// URLs with credentials that are wrong in some other way as well.
		{"password-in-bad-url", common(map[string]string{"url": "mqtt://app:" + password + "@[" + addrs[0], "clientID": "url2"}), false},
		{"password-in-url-bad-scheme", common(map[string]string{"url": "http://app:" + password + "@" + addrs[0], "clientID": "url3"}), false},
		{"password-in-url-no-scheme", common(map[string]string{"url": "app:" + password + "@" + addrs[0], "clientID": "url4"}), false},
		{"password-in-url-no-host", common(map[string]string{"url": "mqtt://app:" + password + "@", "clientID": "url5"}), false},
		{"password-in-url-path", common(map[string]string{"url": "mqtt://app:" + password + "@" + addrs[0] + "/x", "clientID": "url6"}), false},
		{"misspelt-key", common(map[string]string{"url": tcpURL, "username": "app", "password": wrongPassword, "passwrod": password, "clientID": "typo"}), false},
		{"client-cert", common(map[string]string{"url": tlsURL, "caCert": string(ca.PEM), "clientCert": string(clientCert),
			"clientKey": string(clientKey), "clientID": "cert"}), true},
		{"mismatched-key", common(map[string]string{"url": tlsURL, "caCert": string(ca.PEM), "clientCert": string(clientCert),
			"clientKey": string(otherKey), "clientID": "badcert"}), false},
		{"key-as-cert", common(map[string]string{"url": tlsURL, "caCert": string(ca.PEM), "clientCert": string(clientKey),
			"clientKey": string(clientKey), "clientID": "keycert"}), false},
		{"sat", common(map[string]string{"url": satURL, "satAuthFile": tokenFile, "satRefreshInterval": "100ms", "clientID": "sat"}), true},
		{"sat-stolen", common(map[string]string{"url": satURL, "satAuthFile": stolenFile, "clientID": "stolen"}), false},
		{"sat-not-served", common(map[string]string{"url": tcpURL, "satAuthFile": tokenFile, "clientID": "satmq"}), false},
	}
	for _, c := range cases {
		psProps := map[string]string{"noMatchingSubscribers": "accept"}
		for k, v := range c.props {
			psProps[k] = v
		}
		_, perr := pubsub.Init(instance(ctx, "ps-"+c.name), &proto.PubSubInitRequest{Metadata: &proto.MetadataRequest{Properties: psProps}})
		_, serr := state.Init(instance(ctx, "st-"+c.name), &proto.InitRequest{Metadata: &proto.MetadataRequest{Properties: c.props}})
		for _, e := range []struct {
			kind string
			err  error
		}{{"pubsub", perr}, {"state", serr}} {
			if c.ok {
				require.NoError(t, e.err, "%s %s", e.kind, c.name)
			} else {
				require.Error(t, e.err, "%s %s", e.kind, c.name)
				grpcErrors = append(grpcErrors, fmt.Sprintf("%s Init %s: %v", e.kind, c.name, e.err))
			}
		}
	}
	// The connections that got in do their work: a publish, a state write and read.
	for _, name := range []string{"password", "client-cert", "sat"} {
		_, err := pubsub.Publish(instance(ctx, "ps-"+name), &proto.PublishRequest{PubsubName: "ps-" + name, Topic: "t/" + name, Data: []byte("x")})
		require.NoError(t, err, name)
		_, err = state.Set(instance(ctx, "st-"+name), &proto.SetRequest{Key: "app||" + name, Value: []byte("v")})
		require.NoError(t, err, name)
		g, err := state.Get(instance(ctx, "st-"+name), &proto.GetRequest{Key: "app||" + name})
		require.NoError(t, err, name)
		require.Equal(t, "v", string(g.Data))
	}
	// An MQTT 3.1.1 device (Paho's 3.1.1 client, the one of Dapr's pubsub.mqtt3) with the right and
	// a wrong password: the broker's 3.1.1 path logs its refusal too.
	for i, p := range []string{password, wrongPassword} {
		o := pahomqtt.NewClientOptions().AddBroker(tcpURL).SetClientID(fmt.Sprintf("device-%d", i)).
			SetProtocolVersion(4).SetUsername("app").SetPassword(p).SetAutoReconnect(false).SetConnectRetry(false).
			SetConnectTimeout(10 * time.Second)
		dev := pahomqtt.NewClient(o)
		tok := dev.Connect()
		require.True(t, tok.WaitTimeout(10*time.Second), "3.1.1 CONNACK")
		if p == password {
			require.NoError(t, tok.Error())
			dev.Disconnect(0)
		} else {
			require.Error(t, tok.Error())
			grpcErrors = append(grpcErrors, "3.1.1 client: "+tok.Error().Error())
		}
	}
	mq.waitFor(t, "client=device-1")

	// The token rotates: both components re-authenticate inside their connections.
	require.NoError(t, os.WriteFile(tokenFile, []byte(token2), 0o600))
	ps.waitFor(t, "re-authenticated with the rotated service-account token")
	st.waitFor(t, "re-authenticated with the rotated service-account token")
	// The broker sees the wrong password and the refused method (logged as refusals).
	mq.waitFor(t, "unknown user or wrong password")
	metricsURL := strings.TrimPrefix(mq.waitFor(t, "metrics http://"), "metrics ")
	resp, err := http.Get(metricsURL)
	require.NoError(t, err)
	metrics, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.NoError(t, err)
	require.Contains(t, string(metrics), `mqdapr_broker_refused_total{code="0x86"`)

	for _, p := range []*proc{ps.proc, st.proc, mq} {
		p.stop()
	}
	_ = b.Close()

	secrets := []secret{
		newSecret("password", []byte(password)),
		newSecret("wrong password", []byte(wrongPassword)),
		newSecret("bcrypt hash of the password", []byte(hash)),
		newSecret("client key", clientKey),
		newSecret("other client key", otherKey),
		newSecret("broker's TLS key", srvKey),
		newSecret("service-account token", []byte(token1)),
		newSecret("rotated service-account token", []byte(token2)),
		newSecret("stolen service-account token", []byte(stolen)),
	}
	all := map[string]string{
		"mqbroker output":               mq.out.String(),
		"pubsub-mqtt5 output":           ps.out.String(),
		"state-kv output":               st.out.String(),
		"embedded K8S-SAT broker's log": satLog.String(),
		"errors returned to clients":    strings.Join(grpcErrors, "\n"), // Init over the sockets, the 3.1.1 CONNECT
		"mqbroker /metrics":             string(metrics),
	}
	for where, text := range all {
		scan(t, where, text, secrets)
	}
	// The scan looked at real output: the refusals were written and returned.
	require.Contains(t, all["errors returned to clients"], "0x86")
	require.Contains(t, all["pubsub-mqtt5 output"], "connected to")
	for where, text := range all {
		lines := 0
		for sc := bufio.NewScanner(bytes.NewReader([]byte(text))); sc.Scan(); {
			lines++
		}
		t.Logf("%s: %d lines scanned", where, lines)
	}
	if t.Failed() || os.Getenv("SECRETS_DUMP") != "" {
		for where, text := range all {
			t.Logf("--- %s\n%s", where, text)
		}
	}
}
