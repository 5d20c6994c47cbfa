package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/internal/mqttconn"
	"github.com/mqdapr/mqdapr/internal/testutil"
)

// cutProxy forwards TCP connections to target; cut closes those open, as a network blip or a
// broker pod restart behind a Service would, so that the client reconnects.
type cutProxy struct {
	l      net.Listener
	target string
	mu     sync.Mutex
	conns  []net.Conn
}

func startCutProxy(t *testing.T, target string) *cutProxy {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &cutProxy{l: l, target: target}
	t.Cleanup(func() { _ = l.Close(); p.cut() })
	go func() {
		for {
			in, err := l.Accept()
			if err != nil {
				return
			}
			out, err := net.DialTimeout("tcp", target, 5*time.Second)
			if err != nil {
				_ = in.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, in, out)
			p.mu.Unlock()
			go func() { _, _ = io.Copy(out, in); _ = out.Close() }()
			go func() { _, _ = io.Copy(in, out); _ = in.Close() }()
		}
	}()
	return p
}

func (p *cutProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		_ = c.Close()
	}
	p.conns = nil
}

// lineLogger is an mqttconn.Logger that keeps the lines.
type lineLogger struct{ testutil.SyncBuffer }

func (l *lineLogger) logf(level, f string, a ...any) {
	_, _ = fmt.Fprintf(&l.SyncBuffer, level+" "+f+"\n", a...)
}
func (l *lineLogger) Debugf(f string, a ...any) { l.logf("debug", f, a...) }
func (l *lineLogger) Infof(f string, a ...any)  { l.logf("info", f, a...) }
func (l *lineLogger) Warnf(f string, a ...any)  { l.logf("warn", f, a...) }
func (l *lineLogger) Errorf(f string, a ...any) { l.logf("error", f, a...) }

// writeBundle writes a trust bundle the way a Kubernetes ConfigMap volume holds it (what
// cert-manager's trust-manager fills): dir/ca.crt -> ..data/ca.crt, ..data -> ..<version>/, and a
// new version swaps the ..data symlink in one rename.
func writeBundle(t *testing.T, dir, version string, caPEM []byte) {
	t.Helper()
	v := filepath.Join(dir, ".."+version)
	require.NoError(t, os.MkdirAll(v, 0o755))
	require.NoError(t, os.WriteFile(filepath.Join(v, "ca.crt"), caPEM, 0o644))
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	require.NoError(t, os.Symlink(".."+version, tmp))
	require.NoError(t, os.Rename(tmp, filepath.Join(dir, "..data")))
	if _, err := os.Lstat(filepath.Join(dir, "ca.crt")); os.IsNotExist(err) {
		require.NoError(t, os.Symlink(filepath.Join("..data", "ca.crt"), filepath.Join(dir, "ca.crt")))
	}
}

// handshake tries a TLS handshake with addr trusting caPEM.
func handshake(addr string, caPEM []byte, maxVersion uint16) error {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(caPEM)
	c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", addr,
		&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS10, MaxVersion: maxVersion})
	if err == nil {
		_ = c.Close()
	}
	return err
}

// writeServerCert writes a broker certificate for 127.0.0.1 issued by ca, and its key, as
// dir/tls.crt and dir/tls.key.
func writeServerCert(t *testing.T, dir string, ca *testutil.CA) (certFile, keyFile string) {
	t.Helper()
	cert, key := ca.Issue(t, "broker", true, "127.0.0.1")
	certFile, keyFile = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeAtomic(t, certFile, string(cert))
	writeAtomic(t, keyFile, string(key))
	return certFile, keyFile
}

// A CA rotation as cert-manager does it: the broker's certificate is replaced by one of a new CA
// (mqbroker reloads it, tlsreload.go) and the component's trust bundle (caFile, a ConfigMap folder)
// is swapped to the new CA alone. The component, connected all along, reconnects when its
// connection drops and verifies the broker against the new CA, without a restart; a client still
// trusting only the old CA is refused by then.
func TestComponentFollowsRotatedCA(t *testing.T) {
	dir := t.TempDir()
	ca1 := testutil.NewCA(t, "CA 1")
	certFile, keyFile := writeServerCert(t, dir, ca1)
	trust := filepath.Join(dir, "trust")
	writeBundle(t, trust, "v1", ca1.PEM)

	addr, _, lg := startAuthBroker(t, "-addr", "", "-tls-addr", "127.0.0.1:0", "-tls-cert", certFile, "-tls-key", keyFile, "-auth-watch-ms", "50")
	proxy := startCutProxy(t, addr)

	log := &lineLogger{}
	s := mqttconn.DefaultSettings()
	s.URL, s.CAFile, s.ClientID, s.ConnectTimeout = "mqtts://"+proxy.l.Addr().String(), trust, "rotating", 10*time.Second
	c, err := mqttconn.Dial(t.Context(), mqttconn.Options{Settings: s, Kind: mqttconn.KindPubSub, Logger: log})
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	require.EqualValues(t, 1, c.Connects())

	ca2 := testutil.NewCA(t, "CA 2")
	cert2, key2 := ca2.Issue(t, "broker", true, "127.0.0.1")
	writeAtomic(t, keyFile, string(key2))
	writeAtomic(t, certFile, string(cert2))
	lg.waitCount(t, "TLS files reloaded", 1)
	writeBundle(t, trust, "v2", ca2.PEM)
	err = handshake(addr, ca1.PEM, tls.VersionTLS13)
	require.Error(t, err, "the broker serves the new CA's certificate")
	require.Contains(t, err.Error(), "unknown authority")

	proxy.cut()
	require.Eventually(t, func() bool { return c.Connects() == 2 && c.Connected() }, 20*time.Second, 10*time.Millisecond,
		"reconnected through the new CA; component log:\n%s", log.String())
	assert.Contains(t, log.String(), "info mqtt: caFile "+trust+" changed")
	assert.NotContains(t, log.String(), "unknown authority", "no attempt with the old CAs once the bundle changed")
}

// The TLS listener speaks TLS 1.2 at least: a client offering TLS 1.1 at most fails the
// handshake; the same client allowed TLS 1.2 succeeds.
func TestTLSListenerRefusesBelow12(t *testing.T) {
	dir := t.TempDir()
	ca := testutil.NewCA(t, "CA")
	certFile, keyFile := writeServerCert(t, dir, ca)
	addr, _, _ := startAuthBroker(t, "-addr", "", "-tls-addr", "127.0.0.1:0", "-tls-cert", certFile, "-tls-key", keyFile)

	require.NoError(t, handshake(addr, ca.PEM, tls.VersionTLS12))
	for _, v := range []uint16{tls.VersionTLS10, tls.VersionTLS11} {
		err := handshake(addr, ca.PEM, v)
		require.Error(t, err, tls.VersionName(v))
		assert.True(t, strings.Contains(err.Error(), "protocol version not supported"), "%s: %v", tls.VersionName(v), err)
	}
}
