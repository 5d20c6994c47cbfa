package mqttconn

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
)

// TLSConfig builds the client TLS configuration, or returns nil for a plain connection.
// The system roots are used unless caFile/caCert is given. The broker's certificate must name the
// URL's host (or tlsServerName) and chain to those roots, unless insecureSkipVerify.
func (s *Settings) TLSConfig(serverHost string, useTLS bool) (*tls.Config, error) {
	if !useTLS {
		if s.CAFile != "" || s.CACert != "" || s.ClientCert != "" || s.ClientCertFile != "" {
			return nil, fmt.Errorf("%w: TLS material given but the broker URL is not a TLS one; use mqtts:// (or useTls: true)", ErrSettings)
		}
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverHost, InsecureSkipVerify: s.InsecureSkipVerify}
	if s.TLSServerName != "" {
		cfg.ServerName = s.TLSServerName
	}
	switch {
	case s.CACert != "":
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM([]byte(s.CACert)) {
			return nil, fmt.Errorf("%w: caCert holds no PEM certificate", ErrSettings)
		}
		cfg.RootCAs = pool
	case s.CAFile != "":
		pool, _, err := loadCAs(s.CAFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	switch {
	case s.ClientCert != "":
		cert, err := tls.X509KeyPair([]byte(s.ClientCert), []byte(s.ClientKey))
		if err != nil {
			return nil, fmt.Errorf("%w: clientCert/clientKey: %v", ErrSettings, err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	case s.ClientCertFile != "":
		// Read on every handshake so that a rotated certificate (cert-manager) is picked up on reconnect.
		certFile, keyFile := s.ClientCertFile, s.ClientKeyFile
		if _, err := tls.LoadX509KeyPair(certFile, keyFile); err != nil {
			return nil, fmt.Errorf("%w: clientCertFile/clientKeyFile: %v", ErrSettings, err)
		}
		cfg.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			cert, err := tls.LoadX509KeyPair(certFile, keyFile)
			if err != nil {
				return nil, err
			}
			return &cert, nil
		}
	}
	return cfg, nil
}

// insecureWarning is logged at every Dial with insecureSkipVerify.
func (s *Settings) insecureWarning(u string) string {
	msg := fmt.Sprintf("mqtt: insecureSkipVerify is true: the broker's certificate is NOT verified (neither its CA nor its name): "+
		"anyone on the network path to %s can impersonate the broker and read the credentials and every message; "+
		"for a test set-up only: give caFile/caCert (and tlsServerName) instead", u)
	if s.CAFile != "" || s.CACert != "" {
		msg += "; the caFile/caCert is not used while insecureSkipVerify is true"
	}
	return msg
}

// caReloader re-reads caFile at every connection attempt, so that a trust bundle rotated on disk
// (cert-manager's trust-manager, a re-mounted ConfigMap) applies at the next reconnection without a
// restart. A bundle that no longer loads leaves the last good one in force, and that is logged.
type caReloader struct {
	file string
	base *tls.Config // the configuration built at Dial; its RootCAs is the bundle read then

	mu  sync.Mutex
	cur *tls.Config
	sum [sha256.Size]byte
	bad [sha256.Size]byte // content that last failed to load (logged once)
}

func newCAReloader(file string, base *tls.Config) (*caReloader, error) {
	_, sum, err := loadCAs(file)
	if err != nil {
		return nil, err
	}
	return &caReloader{file: file, base: base, cur: base, sum: sum}, nil
}

// config returns the TLS configuration for the next handshake.
func (r *caReloader) config(log Logger) *tls.Config {
	pool, sum, err := loadCAs(r.file)
	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case err != nil:
		if sum != r.bad {
			r.bad = sum
			log.Errorf("mqtt: caFile not reloaded, keeping the CAs last read: %v", err)
		}
	case sum != r.sum:
		c := r.base.Clone()
		c.RootCAs = pool
		r.cur, r.sum, r.bad = c, sum, [sha256.Size]byte{}
		log.Infof("mqtt: caFile %s changed: the next connections verify the broker against the new CAs", r.file)
	}
	return r.cur
}

// explainTLS adds to a failed handshake what to check, naming the setting.
func explainTLS(err error, serverName string) error {
	var host x509.HostnameError
	var unknown x509.UnknownAuthorityError
	switch {
	case errors.As(err, &host):
		return fmt.Errorf("%w (the broker's certificate is not for %q: set tlsServerName to a name the certificate holds, or use that name in url)", err, serverName)
	case errors.As(err, &unknown):
		return fmt.Errorf("%w (the broker's certificate is not signed by a CA of caFile/caCert, or of the system roots when neither is given)", err)
	case strings.Contains(err.Error(), "tls: protocol version not supported"):
		// the protocol_version alert (crypto/tls exports no type for it outside QUIC)
		return fmt.Errorf("%w (mqdapr requires TLS 1.2 or later; the broker offers only older versions)", err)
	}
	return err
}

// loadCAs reads a PEM file, or every regular file of a folder (a mounted trust bundle), into a
// pool; sum is over the content read.
func loadCAs(path string) (*x509.CertPool, [sha256.Size]byte, error) {
	pool, content, err := readCAs(path)
	return pool, sha256.Sum256(content), err
}

func readCAs(path string) (*x509.CertPool, []byte, error) {
	var all bytes.Buffer
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: caFile=%q: %v", ErrSettings, path, err)
	}
	files := []string{path}
	if fi.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: caFile=%q: %v", ErrSettings, path, err)
		}
		files = files[:0]
		for _, e := range entries {
			// Kubernetes mounts config maps through ..data symlinks; follow them, skip hidden entries.
			if e.Name()[0] == '.' {
				continue
			}
			files = append(files, filepath.Join(path, e.Name()))
		}
		sort.Strings(files)
	}
	pool := x509.NewCertPool()
	found := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			if fi.IsDir() {
				continue // a sub-folder
			}
			return nil, all.Bytes(), fmt.Errorf("%w: caFile=%q: %v", ErrSettings, f, err)
		}
		all.WriteString(f)
		all.WriteByte(0)
		all.Write(data)
		all.WriteByte(0)
		for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
			if block.Type != "CERTIFICATE" {
				continue
			}
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, all.Bytes(), fmt.Errorf("%w: caFile=%q: %v", ErrSettings, f, err)
			}
			pool.AddCert(cert)
			found++
		}
	}
	if found == 0 {
		return nil, all.Bytes(), fmt.Errorf("%w: caFile=%q holds no PEM certificate", ErrSettings, path)
	}
	return pool, all.Bytes(), nil
}
