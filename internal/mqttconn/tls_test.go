package mqttconn

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/internal/testutil"
)

// startTLSBroker runs the broker with a TLS listener serving certPEM/keyPEM; it returns the port.
func startTLSBroker(t *testing.T, certPEM, keyPEM []byte) int {
	t.Helper()
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	require.NoError(t, err)
	port := testutil.FreePort(t)
	o := broker.NewDefaultOptions()
	o.Addr = ""
	o.TLSAddr = fmt.Sprintf("127.0.0.1:%d", port)
	o.TLSConfig = &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := broker.New(o)
	require.NoError(t, err)
	require.NoError(t, b.Start())
	t.Cleanup(func() { _ = b.Close() })
	return port
}

// recLogger records every line logged, with its level.
type recLogger struct {
	mu    sync.Mutex
	lines []string
}

func (l *recLogger) add(level, f string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines = append(l.lines, level+" "+fmt.Sprintf(f, a...))
}
func (l *recLogger) Debugf(f string, a ...any) { l.add("debug", f, a...) }
func (l *recLogger) Infof(f string, a ...any)  { l.add("info", f, a...) }
func (l *recLogger) Warnf(f string, a ...any)  { l.add("warn", f, a...) }
func (l *recLogger) Errorf(f string, a ...any) { l.add("error", f, a...) }
func (l *recLogger) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Join(l.lines, "\n")
}

func tlsSettings(url string, caPEM []byte) Settings {
	s := DefaultSettings()
	s.URL, s.CACert, s.ClientID, s.ConnectTimeout = url, string(caPEM), "tls", 3*time.Second
	return s
}

func dialTLS(t *testing.T, s Settings, log Logger) (*Conn, error) {
	t.Helper()
	c, err := Dial(t.Context(), Options{Settings: s, Kind: KindPubSub, Logger: log})
	if err == nil {
		t.Cleanup(func() { _ = c.Close(context.Background()) })
	}
	return c, err
}

// The broker's certificate is checked against the host of the URL by default: a certificate for
// another name is refused with an error naming the names and tlsServerName; tlsServerName set to
// the certificate's name lets the same broker in, and a wrong tlsServerName is refused too.
func TestTLSServerNameChecked(t *testing.T) {
	ca := testutil.NewCA(t, "broker CA")
	cert, key := ca.Issue(t, "broker", true, "broker.example")
	port := startTLSBroker(t, cert, key)

	s := tlsSettings(fmt.Sprintf("mqtts://127.0.0.1:%d", port), ca.PEM)
	_, err := dialTLS(t, s, nil)
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrConnect)
	assert.Contains(t, err.Error(), "127.0.0.1")
	assert.Contains(t, err.Error(), "tlsServerName")

	s.TLSServerName = "other.example"
	_, err = dialTLS(t, s, nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "x509: certificate is valid for broker.example, not other.example")
	assert.Contains(t, err.Error(), "tlsServerName")

	s.TLSServerName = "broker.example"
	c, err := dialTLS(t, s, nil)
	require.NoError(t, err)
	assert.True(t, c.Connected())
}

// A broker certificate of a CA the component does not trust is refused, saying so; it is the
// default (insecureSkipVerify false).
func TestTLSOtherCARefused(t *testing.T) {
	ca := testutil.NewCA(t, "broker CA")
	cert, key := ca.Issue(t, "broker", true, "127.0.0.1")
	port := startTLSBroker(t, cert, key)
	other := testutil.NewCA(t, "other CA")

	_, err := dialTLS(t, tlsSettings(fmt.Sprintf("mqtts://127.0.0.1:%d", port), other.PEM), nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "certificate signed by unknown authority")
	assert.Contains(t, err.Error(), "caFile/caCert")

	c, err := dialTLS(t, tlsSettings(fmt.Sprintf("mqtts://127.0.0.1:%d", port), ca.PEM), nil)
	require.NoError(t, err, "the right CA connects: the refusal above was the CA")
	assert.True(t, c.Connected())
}

// insecureSkipVerify: true connects to a broker whose certificate is neither of a trusted CA nor
// for the host, and says at warn level, at every Dial, what that exposes. Without TLS it is
// refused like the other TLS settings.
func TestInsecureSkipVerifyWarned(t *testing.T) {
	ca := testutil.NewCA(t, "broker CA")
	cert, key := ca.Issue(t, "broker", true, "broker.example")
	port := startTLSBroker(t, cert, key)

	s := tlsSettings(fmt.Sprintf("mqtts://127.0.0.1:%d", port), nil)
	s.CACert = ""
	s.InsecureSkipVerify = true
	log := &recLogger{}
	c, err := dialTLS(t, s, log)
	require.NoError(t, err)
	assert.True(t, c.Connected())
	assert.Contains(t, log.String(), "warn mqtt: insecureSkipVerify is true: the broker's certificate is NOT verified")
	assert.Contains(t, log.String(), "impersonate the broker")

	// With a CA given as well: allowed, and the warning says the CA is not used.
	s.CACert = string(testutil.NewCA(t, "unused").PEM)
	log = &recLogger{}
	_, err = dialTLS(t, s, log)
	require.NoError(t, err)
	assert.Contains(t, log.String(), "caFile/caCert is not used")

	plain := DefaultSettings()
	plain.URL, plain.InsecureSkipVerify = "mqtt://127.0.0.1:1", true
	err = plain.Validate()
	require.ErrorIs(t, err, ErrSettings)
	assert.Contains(t, err.Error(), "insecureSkipVerify")
}

// The component speaks TLS 1.2 at least: a server offering TLS 1.1 at most is refused, saying
// why. The server is proven to work with a client that accepts TLS 1.1.
func TestTLSBelow12Refused(t *testing.T) {
	ca := testutil.NewCA(t, "old CA")
	cert, key := ca.Issue(t, "old", true, "127.0.0.1")
	pair, err := tls.X509KeyPair(cert, key)
	require.NoError(t, err)
	l, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{Certificates: []tls.Certificate{pair},
		MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11})
	require.NoError(t, err)
	t.Cleanup(func() { _ = l.Close() })
	go func() {
		for {
			nc, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer nc.Close()
				_ = nc.(*tls.Conn).Handshake()
				_, _ = io.Copy(io.Discard, nc)
			}()
		}
	}()

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.PEM)
	old, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", l.Addr().String(),
		&tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS10})
	require.NoError(t, err, "the TLS 1.1 server works for a client that accepts TLS 1.1")
	assert.Equal(t, uint16(tls.VersionTLS11), old.ConnectionState().Version)
	old.Close()

	_, err = dialTLS(t, tlsSettings("mqtts://"+l.Addr().String(), ca.PEM), nil)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "protocol version not supported")
	assert.Contains(t, err.Error(), "TLS 1.2")
}

// caFile is read again at each connection attempt: a bundle that no longer loads (a half-written
// file, a wrong mount) keeps the CAs last read and is logged once, not at every attempt; a new
// good bundle is taken and logged.
func TestCAFileReloadKeepsLastGood(t *testing.T) {
	file := filepath.Join(t.TempDir(), "ca.crt")
	ca1, ca2 := testutil.NewCA(t, "CA 1"), testutil.NewCA(t, "CA 2")
	require.NoError(t, os.WriteFile(file, ca1.PEM, 0o600))
	s := Settings{CAFile: file}
	base, err := s.TLSConfig("broker", true)
	require.NoError(t, err)
	r, err := newCAReloader(file, base)
	require.NoError(t, err)
	log := &recLogger{}
	require.Same(t, base, r.config(log), "unchanged: the configuration of Dial")

	require.NoError(t, os.WriteFile(file, []byte("-----BEGIN CERTIFICATE-----\ntruncated"), 0o600))
	for range 3 {
		require.Same(t, base, r.config(log), "a bundle that does not load keeps the last good CAs")
	}
	assert.Equal(t, 1, strings.Count(log.String(), "error mqtt: caFile not reloaded, keeping the CAs last read"), log.String())

	require.NoError(t, os.WriteFile(file, ca2.PEM, 0o600))
	next := r.config(log)
	require.NotSame(t, base, next)
	assert.Equal(t, "broker", next.ServerName)
	assert.Equal(t, uint16(tls.VersionTLS12), next.MinVersion)
	want := x509.NewCertPool()
	want.AppendCertsFromPEM(ca2.PEM)
	assert.True(t, want.Equal(next.RootCAs), "the new CA alone")
	assert.Contains(t, log.String(), "info mqtt: caFile "+file+" changed")
	require.Same(t, next, r.config(log), "read again, unchanged")
}
