package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

// Off loopback, authentication is the default: without -password-file the broker refuses to start
// unless -allow-anonymous is given, naming both flags; bad password and ACL files name file:line.
func TestAuthFlagsParse(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "[::]:0", "192.0.2.1:1883"} {
		err := run([]string{"-addr", addr, "-tls-addr", "", "-kv=false"})
		require.ErrorContains(t, err, "listener "+addr+" is not on loopback and no -password-file is given", addr)
		require.ErrorContains(t, err, "-allow-anonymous", addr)
	}
	// The WebSocket listener is checked like the TCP one (the TCP listener here on loopback).
	err := run([]string{"-addr", "127.0.0.1:0", "-tls-addr", "", "-ws-addr", "0.0.0.0:0", "-kv=false"})
	require.ErrorContains(t, err, "listener 0.0.0.0:0 is not on loopback and no -password-file is given")
	for _, addr := range []string{"127.0.0.1:0", "localhost:0", "[::1]:0"} {
		require.True(t, onLoopback(addr), addr)
	}
	cfg, err := parseConfig([]string{"-addr", "0.0.0.0:0", "-allow-anonymous"})
	require.NoError(t, err)
	s, err := setupAuth(cfg, []string{cfg.Addr}, nil)
	require.NoError(t, err)
	require.Nil(t, s.auth, "-allow-anonymous without a password file: no Authenticator")

	dir := t.TempDir()
	pw, acl := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	require.NoError(t, os.WriteFile(pw, []byte("# users\nalice\n"), 0o600))
	require.NoError(t, os.WriteFile(acl, []byte("all\ntopic read a/#\ntopic rw b\n"), 0o600))
	err = run([]string{"-addr", "127.0.0.1:0", "-tls-addr", "", "-kv=false", "-password-file", pw})
	require.ErrorContains(t, err, pw+":2: want `<user name>:<bcrypt hash>`")
	err = run([]string{"-addr", "127.0.0.1:0", "-tls-addr", "", "-kv=false", "-acl-file", acl})
	require.ErrorContains(t, err, acl+":3: access \"rw\": want topic read|write|readwrite|deny <filter>")
	err = run([]string{"-addr", "127.0.0.1:0", "-tls-addr", "", "-kv=false", "-acl-file", filepath.Join(dir, "none")})
	require.ErrorContains(t, err, "-acl-file: open ")
	for flag, want := range map[string]string{
		"-auth-failure-burst=0":    "-auth-failure-burst 0: want a count ≥ 1, or -1 for no limit",
		"-auth-failure-burst=-2":   "-auth-failure-burst -2: want a count ≥ 1, or -1 for no limit",
		"-auth-failure-refill=1":   `-auth-failure-refill "1": want a positive Go duration such as 1s or 500ms`,
		"-auth-failure-refill=-1s": `-auth-failure-refill "-1s": want a positive Go duration`,
	} {
		err = run([]string{"-addr", "127.0.0.1:0", "-tls-addr", "", "-kv=false", flag})
		require.ErrorContains(t, err, want, flag)
	}

	f := filepath.Join(dir, "mqbroker.json")
	require.NoError(t, os.WriteFile(f, []byte(`{"password_file":"/p","acl_file":"/a","allow_anonymous":false,"auth_watch_ms":0}`), 0o600))
	cfg, err = parseConfig([]string{"-config", f, "-allow-anonymous"})
	require.NoError(t, err)
	require.Equal(t, "/p", cfg.PasswordFile)
	require.Equal(t, "/a", cfg.ACLFile)
	require.True(t, *cfg.AllowAnonymous, "the flag wins over the file")
	require.Zero(t, cfg.AuthWatchMS)
}

// The image's default command (used by Compose and the container tests) listens on 0.0.0.0 and
// says -allow-anonymous explicitly: it must pass the off-loopback check.
func TestDockerfileCommandStarts(t *testing.T) {
	raw, err := os.ReadFile("Dockerfile")
	require.NoError(t, err)
	var args []string
	for _, line := range strings.Split(string(raw), "\n") {
		if rest, ok := strings.CutPrefix(line, "CMD "); ok {
			require.NoError(t, json.Unmarshal([]byte(rest), &args))
		}
	}
	require.Contains(t, args, "0.0.0.0:1883")
	cfg, err := parseConfig(args)
	require.NoError(t, err)
	_, err = setupAuth(cfg, []string{cfg.Addr}, nil)
	require.NoError(t, err, "CMD %q", args)
	cfg, err = parseConfig(args[:4]) // without -allow-anonymous
	require.NoError(t, err)
	_, err = setupAuth(cfg, []string{cfg.Addr}, nil)
	require.Error(t, err)
}

// The Compose file replaces the image's command for the broker: that command too must pass the
// off-loopback check (it listens on 0.0.0.0 inside the Compose network), with the password and
// ACL files it mounts (bind mounts of the repository, mapped back onto their host paths here, so
// the files themselves must load too).
func TestComposeBrokerCommandStarts(t *testing.T) {
	root := filepath.Join("..", "..")
	raw, err := os.ReadFile(filepath.Join(root, "docker-compose.yaml"))
	require.NoError(t, err)
	var compose struct {
		Services map[string]struct {
			Command []string `yaml:"command"`
			Volumes []string `yaml:"volumes"`
		} `yaml:"services"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &compose))
	broker := compose.Services["broker"]
	require.NotEmpty(t, broker.Command, "docker-compose.yaml: services.broker.command")
	args := slices.Clone(broker.Command)
	for _, v := range broker.Volumes {
		host, inside, ok := strings.Cut(strings.TrimSuffix(v, ":ro"), ":")
		if !ok || !strings.HasPrefix(host, "./") {
			continue // a named volume
		}
		for i, a := range args {
			if a == inside || strings.HasPrefix(a, inside+"/") {
				args[i] = filepath.Join(root, host, strings.TrimPrefix(a, inside))
			}
		}
	}
	cfg, err := parseConfig(args)
	require.NoError(t, err, "command %q", args)
	listeners, _, err := unauthenticatedListeners(cfg)
	require.NoError(t, err)
	_, err = setupAuth(cfg, listeners, nil)
	require.NoError(t, err, "docker-compose.yaml broker command %q (bind mounts mapped: %q)", broker.Command, args)
}

// `mqbroker passwd` takes the password from stdin, never from the command line.
func TestPasswdSubcommand(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	code, out := passwd(t, path, "alice", "first\n")
	require.Equal(t, 0, code, out)
	code, out = passwd(t, path, "bob", "second")
	require.Equal(t, 0, code, out)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Regexp(t, `^alice:\$2a\$04\$\S{53}\nbob:\$2a\$04\$\S{53}\n$`, string(data))
	require.NotContains(t, string(data), "first")

	cmd := exec.Command(os.Args[0], "passwd", path, "carol", "pw-in-argv")
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	o, err := cmd.CombinedOutput()
	require.Error(t, err)
	require.Contains(t, string(o), "usage: mqbroker passwd [-cost N] <password file> <user name>")
	code, out = passwd(t, path, "dave", "")
	require.Equal(t, 1, code)
	require.Contains(t, out, "empty password on stdin")
}

// writeAtomic replaces a file by a rename, as `mqbroker passwd` and Kubernetes volumes do, so that
// the watcher never reads it half written.
func writeAtomic(t *testing.T, path, content string) {
	t.Helper()
	tmp := path + ".tmp"
	require.NoError(t, os.WriteFile(tmp, []byte(content), 0o600))
	require.NoError(t, os.Rename(tmp, path))
}

func passwd(t *testing.T, path, user, stdin string) (int, string) {
	t.Helper()
	cmd := exec.Command(os.Args[0], "passwd", "-cost", "4", path, user)
	cmd.Env = append(os.Environ(), helperEnv+"=1")
	cmd.Stdin = strings.NewReader(stdin)
	out, err := cmd.CombinedOutput()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), string(out)
	}
	require.NoError(t, err)
	return 0, string(out)
}

// procLog collects a process's stderr for waitFor.
type procLog struct {
	mu  sync.Mutex
	buf strings.Builder
}

func (l *procLog) collect(r io.Reader) {
	sc := bufio.NewScanner(r)
	for sc.Scan() {
		l.mu.Lock()
		l.buf.WriteString(sc.Text() + "\n")
		l.mu.Unlock()
	}
}

func (l *procLog) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// waitCount waits until substr has appeared n times.
func (l *procLog) waitCount(t *testing.T, substr string, n int) {
	t.Helper()
	require.Eventually(t, func() bool { return strings.Count(l.String(), substr) >= n }, 10*time.Second, 5*time.Millisecond,
		"%d× %q in the log:\n%s", n, substr, l)
}

func startAuthBroker(t *testing.T, args ...string) (string, *os.Process, *procLog) {
	t.Helper()
	broker := exec.Command(os.Args[0], append([]string{"-addr", "127.0.0.1:0", "-tls-addr", "", "-log-level", "info"}, args...)...)
	broker.Env = append(os.Environ(), helperEnv+"=1")
	out, err := broker.StdoutPipe()
	require.NoError(t, err)
	errp, err := broker.StderrPipe()
	require.NoError(t, err)
	require.NoError(t, broker.Start())
	lg := &procLog{}
	go lg.collect(errp)
	exited := make(chan struct{})
	go func() { _ = broker.Wait(); close(exited) }()
	t.Cleanup(func() { testutil.Stop(broker.Process, exited, syscall.SIGKILL, 0) })
	line, err := bufio.NewReader(out).ReadString('\n')
	require.NoError(t, err, "stderr: %s", lg)
	return strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(line), "listening ["), "]"), broker.Process, lg
}

// connect returns the CONNACK reason code for user/pass, and the client when accepted.
func connect(t *testing.T, addr, id, user, pass string) (byte, *paho.Client) {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	c := paho.NewClient(paho.ClientConfig{ClientID: id, Conn: nc, OnClientError: func(error) {}})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true,
		Username: user, UsernameFlag: user != "", Password: []byte(pass), PasswordFlag: pass != ""})
	require.NotNil(t, ca, err)
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{})
		nc.Close()
	})
	return ca.ReasonCode, c
}

func subscribeCode(t *testing.T, c *paho.Client, filter string) byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	sa, err := c.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 1}}})
	require.NotNil(t, sa, err)
	return sa.Reasons[0]
}

// The password and ACL files are reloaded when their content changes (-auth-watch-ms); a file that
// no longer parses is reported naming file:line and the last good one stays in force; no password
// or hash reaches the log. The process is the real mqbroker, the client paho.golang over TCP.
func TestAuthReloadOnChange(t *testing.T) {
	dir := t.TempDir()
	pw, acl := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	code, out := passwd(t, pw, "alice", "pw-one-secret\n")
	require.Equal(t, 0, code, out)
	hashOne, err := os.ReadFile(pw)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(acl, []byte("all\ntopic readwrite tenants/%u/#\n"), 0o600))
	metrics := fmt.Sprintf("127.0.0.1:%d", testutil.FreePort(t))
	addr, _, lg := startAuthBroker(t, "-password-file", pw, "-acl-file", acl, "-auth-watch-ms", "20", "-kv=false", "-metrics-addr", metrics)

	rc, _ := connect(t, addr, "anon", "", "")
	require.Equal(t, byte(0x87), rc, "anonymous refused with a password file")
	rc, _ = connect(t, addr, "bad", "alice", "wrong")
	require.Equal(t, byte(0x86), rc)
	rc, c := connect(t, addr, "a1", "alice", "pw-one-secret")
	require.Equal(t, byte(0), rc)
	require.Equal(t, byte(1), subscribeCode(t, c, "tenants/alice/#"))
	require.Equal(t, byte(0x87), subscribeCode(t, c, "tenants/bob/#"))
	require.Eventually(t, func() bool {
		resp, err := http.Get("http://" + metrics + "/metrics")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return strings.Contains(string(body), `mqdapr_broker_acl_refused_total{kind="subscribe"} 1`) &&
			strings.Contains(string(body), `mqdapr_broker_refused_total{code="0x86",reason="bad_username_or_password"} 1`)
	}, 10*time.Second, 10*time.Millisecond, "refusals counted in /metrics")

	// A broken ACL: reported with file:line, the last good one kept.
	writeAtomic(t, acl, "all\ntopic readwrite tenants/%u/#\ntopic maybe x\n")
	lg.waitCount(t, "ACL file not reloaded: keeping the last good one", 1)
	require.Contains(t, lg.String(), acl+`:3: access \"maybe\"`)
	require.Equal(t, byte(1), subscribeCode(t, c, "tenants/alice/a"))
	// A good one applies to the next SUBSCRIBE.
	writeAtomic(t, acl, "user alice\ntopic read tenants/bob/#\n")
	lg.waitCount(t, "ACL file reloaded", 1)
	// The subscriptions granted under the old file and not under the new one are removed.
	lg.waitCount(t, `msg="subscription removed: no longer authorized" client=a1 user=alice filter=tenants/alice/#`, 1)
	require.Equal(t, byte(0x87), subscribeCode(t, c, "tenants/alice/b"))
	require.Equal(t, byte(1), subscribeCode(t, c, "tenants/bob/#"))

	// A new password (mqbroker passwd rewrites the file), then a broken file.
	code, out = passwd(t, pw, "alice", "pw-two-secret\n")
	require.Equal(t, 0, code, out)
	lg.waitCount(t, "password file reloaded", 1)
	rc, _ = connect(t, addr, "a2", "alice", "pw-one-secret")
	require.Equal(t, byte(0x86), rc)
	rc, _ = connect(t, addr, "a3", "alice", "pw-two-secret")
	require.Equal(t, byte(0), rc)
	writeAtomic(t, pw, "alice:pw-three-secret\n")
	lg.waitCount(t, "password file not reloaded: keeping the last good one", 1)
	require.Contains(t, lg.String(), pw+`:1: user \"alice\": the hash is not a bcrypt hash`)
	rc, _ = connect(t, addr, "a4", "alice", "pw-two-secret")
	require.Equal(t, byte(0), rc, "the last good file")

	logs := lg.String()
	for _, secret := range []string{"pw-one-secret", "pw-two-secret", "pw-three-secret", strings.TrimSpace(string(hashOne))[len("alice:"):]} {
		require.NotContains(t, logs, secret)
	}
	require.Contains(t, logs, "authentication refused", "refusals are logged")
}

// SIGHUP reloads the files when watching is off (-auth-watch-ms 0).
func TestAuthReloadOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	pw := filepath.Join(dir, "passwd")
	code, out := passwd(t, pw, "alice", "one\n")
	require.Equal(t, 0, code, out)
	addr, proc, lg := startAuthBroker(t, "-password-file", pw, "-auth-watch-ms", "0", "-kv=false")
	code, out = passwd(t, pw, "alice", "two\n")
	require.Equal(t, 0, code, out)
	rc, _ := connect(t, addr, "a1", "alice", "one")
	require.Equal(t, byte(0), rc, "no reload without SIGHUP")
	require.NoError(t, proc.Signal(syscall.SIGHUP))
	lg.waitCount(t, "password file reloaded", 1)
	rc, _ = connect(t, addr, "a2", "alice", "one")
	require.Equal(t, byte(0x86), rc)
	rc, _ = connect(t, addr, "a3", "alice", "two")
	require.Equal(t, byte(0), rc)
}

// The mqbroker process wires the ACL's key rules into its key-value store: app1 writes its own
// keys and gets `-ERR not authorized` (docs/state-store-protocol.md#responses) for app2's.
func TestAuthKeyRulesProcess(t *testing.T) {
	dir := t.TempDir()
	pw, acl := filepath.Join(dir, "passwd"), filepath.Join(dir, "acl")
	code, out := passwd(t, pw, "app1", "p1\n")
	require.Equal(t, 0, code, out)
	require.NoError(t, os.WriteFile(acl, []byte(`all
topic write statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke
topic readwrite clients/%c/#
key readwrite %u||
`), 0o600))
	addr, _, _ := startAuthBroker(t, "-password-file", pw, "-acl-file", acl)
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	msgs := make(chan *paho.Publish, 10)
	c := paho.NewClient(paho.ClientConfig{ClientID: "app1-0", Conn: nc, OnClientError: func(error) {},
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			msgs <- pr.Packet
			return true, nil
		}}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	ca, err := c.Connect(ctx, &paho.Connect{ClientID: "app1-0", KeepAlive: 30, CleanStart: true,
		Username: "app1", UsernameFlag: true, Password: []byte("p1"), PasswordFlag: true})
	require.NoError(t, err)
	require.Equal(t, byte(0), ca.ReasonCode)
	defer func() { _ = c.Disconnect(&paho.Disconnect{}); nc.Close() }()
	resp := "clients/app1-0/services/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke/response"
	require.Equal(t, byte(1), subscribeCode(t, c, resp))
	call := func(key string) string {
		payload := fmt.Sprintf("*3\r\n$3\r\nSET\r\n$%d\r\n%s\r\n$1\r\nv\r\n", len(key), key)
		props := &paho.PublishProperties{ResponseTopic: resp, CorrelationData: []byte(key)}
		props.User.Add("__ts", "001696374425000:00000:app1-node")
		r, err := c.Publish(ctx, &paho.Publish{Topic: "statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke", QoS: 1,
			Payload: []byte(payload), Properties: props})
		require.NoError(t, err)
		require.Equal(t, byte(0), r.ReasonCode)
		select {
		case p := <-msgs:
			require.Equal(t, key, string(p.Properties.CorrelationData))
			return string(p.Payload)
		case <-ctx.Done():
			t.Fatal("no response")
			return ""
		}
	}
	require.Equal(t, "+OK\r\n", call("app1||k"))
	require.Equal(t, "-ERR not authorized\r\n", call("app2||k"))
}
