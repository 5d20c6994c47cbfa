// Package testutil starts real third-party processes for tests (Mosquitto) on free loopback ports
// in temporary folders, and generates TLS material.
package testutil

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// MosquittoOptions adjust the generated mosquitto.conf.
type MosquittoOptions struct {
	// TLS serves the listener with this certificate (CA, cert, key as PEM files).
	TLS *TLSFiles
	// Passwords switches anonymous access off and allows these user/password pairs.
	Passwords map[string]string
	// MaxPacketSize is advertised to clients in CONNACK (0: Mosquitto's default, none).
	MaxPacketSize int
	// Extra lines appended to the configuration.
	Extra []string
}

// Mosquitto is a running Mosquitto (Debian's 2.0.11 in CI) owned by a test.
type Mosquitto struct {
	t    testing.TB
	Dir  string
	Port int
	conf string
	cmd  *exec.Cmd
	done chan struct{}
}

// MosquittoPath finds the mosquitto binary. When it is missing the test is skipped, except in CI
// (CI=true), where it fails: `make test` installs it (scripts/install-test-deps.sh).
func MosquittoPath(t testing.TB) string {
	t.Helper()
	for _, p := range []string{"mosquitto", "/usr/sbin/mosquitto"} {
		if path, err := exec.LookPath(p); err == nil {
			return path
		}
	}
	if os.Getenv("CI") != "" {
		t.Fatal("mosquitto not found; scripts/install-test-deps.sh installs it (make test runs it)")
	}
	t.Skip("mosquitto not found: run scripts/install-test-deps.sh (or `make test`) to enable this test")
	return ""
}

// StartMosquitto writes a configuration with persistence into a temporary folder, starts Mosquitto
// on a free loopback port and waits until it accepts connections. It is killed at test cleanup.
func StartMosquitto(t testing.TB, o MosquittoOptions) *Mosquitto {
	t.Helper()
	MosquittoPath(t)
	m := &Mosquitto{t: t, Dir: t.TempDir(), Port: FreePort(t)}
	lines := []string{
		fmt.Sprintf("listener %d 127.0.0.1", m.Port),
		"persistence true",
		"persistence_location " + m.Dir + "/",
		"autosave_interval 1",
		"max_queued_messages 100000",
		"max_inflight_messages 0",
		"persistent_client_expiration 1d",
		"log_dest file " + filepath.Join(m.Dir, "mosquitto.log"),
		"log_type all",
		// Running as root, Mosquitto would drop privileges to user mosquitto, who cannot write here.
		"user root",
	}
	if o.TLS != nil {
		lines = append(lines, "cafile "+o.TLS.CA, "certfile "+o.TLS.Cert, "keyfile "+o.TLS.Key)
	}
	if len(o.Passwords) > 0 {
		pwfile := filepath.Join(m.Dir, "passwd")
		var b strings.Builder
		for u, p := range o.Passwords {
			fmt.Fprintf(&b, "%s:%s\n", u, p)
		}
		if err := os.WriteFile(pwfile, []byte(b.String()), 0o600); err != nil {
			t.Fatal(err)
		}
		// mosquitto_passwd -U hashes the plain-text file in place.
		if out, err := exec.Command("mosquitto_passwd", "-U", pwfile).CombinedOutput(); err != nil {
			t.Fatalf("mosquitto_passwd -U: %v %s", err, out)
		}
		lines = append(lines, "allow_anonymous false", "password_file "+pwfile)
	} else {
		lines = append(lines, "allow_anonymous true")
	}
	if o.MaxPacketSize > 0 {
		lines = append(lines, fmt.Sprintf("max_packet_size %d", o.MaxPacketSize))
	}
	lines = append(lines, o.Extra...)
	m.conf = filepath.Join(m.Dir, "mosquitto.conf")
	if err := os.WriteFile(m.conf, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m.Start()
	t.Cleanup(m.Kill)
	return m
}

// URL is the broker's mqtt:// (or mqtts:// with TLS) address.
func (m *Mosquitto) URL(tls bool) string {
	if tls {
		return fmt.Sprintf("mqtts://127.0.0.1:%d", m.Port)
	}
	return fmt.Sprintf("mqtt://127.0.0.1:%d", m.Port)
}

// Addr is host:port.
func (m *Mosquitto) Addr() string { return fmt.Sprintf("127.0.0.1:%d", m.Port) }

// Start (re)starts Mosquitto on the same port, configuration and persistence folder.
func (m *Mosquitto) Start() {
	m.t.Helper()
	m.cmd = exec.Command(MosquittoPath(m.t), "-c", m.conf)
	out, err := os.OpenFile(filepath.Join(m.Dir, "mosquitto.out"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		m.t.Fatal(err)
	}
	defer out.Close()
	m.cmd.Stdout, m.cmd.Stderr = out, out
	if err := m.cmd.Start(); err != nil {
		m.t.Fatalf("start mosquitto: %v", err)
	}
	m.done = make(chan struct{})
	go func(cmd *exec.Cmd, done chan struct{}) { _ = cmd.Wait(); close(done) }(m.cmd, m.done)
	WaitListening(m.t, m.Addr(), 10*time.Second, m.done)
}

// Stop ends Mosquitto with SIGTERM (it saves its persistence file) and waits for it.
func (m *Mosquitto) Stop() { m.signal(syscall.SIGTERM) }

// Kill ends Mosquitto with SIGKILL and waits for it.
func (m *Mosquitto) Kill() { m.signal(syscall.SIGKILL) }

func (m *Mosquitto) signal(sig syscall.Signal) {
	if m.cmd == nil {
		return
	}
	Stop(m.cmd.Process, m.done, sig, 15*time.Second)
}

// Log returns Mosquitto's log so far (for failure messages).
func (m *Mosquitto) Log() string {
	b, _ := os.ReadFile(filepath.Join(m.Dir, "mosquitto.log"))
	return string(b)
}

// handedOut are the ports FreePort returned in this process.
var handedOut struct {
	sync.Mutex
	ports map[int]bool
}

// FreePort returns a loopback TCP port that was free a moment ago and that it has not returned
// before in this process: the kernel may give a port that was just closed to the next bind to
// port 0, so two calls in a row (an app's health port and its daprd's gRPC port, say) could
// otherwise return the same port, and the second program would fail to listen.
func FreePort(t testing.TB) int {
	t.Helper()
	handedOut.Lock()
	defer handedOut.Unlock()
	if handedOut.ports == nil {
		handedOut.ports = map[int]bool{}
	}
	var held []net.Listener // kept open while retrying, so the kernel offers other ports
	defer func() {
		for _, l := range held {
			l.Close()
		}
	}()
	for range 100 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, l)
		if p := l.Addr().(*net.TCPAddr).Port; !handedOut.ports[p] {
			handedOut.ports[p] = true
			return p
		}
	}
	t.Fatal("FreePort: no port not handed out before in 100 tries")
	return 0
}

// WaitListening polls addr until it accepts a TCP connection, the process ends (exited), or the
// timeout passes.
func WaitListening(t testing.TB, addr string, timeout time.Duration, exited <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return
		}
		select {
		case <-exited:
			t.Fatalf("process serving %s exited before listening", addr)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s not listening after %s: %v", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond) // polling interval, not synchronisation
	}
}
