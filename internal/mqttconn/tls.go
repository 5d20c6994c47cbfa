package mqttconn

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

// TLSConfig builds the client TLS configuration, or returns nil for a plain connection.
// The system roots are used unless caFile/caCert is given.
func (s *Settings) TLSConfig(serverHost string, useTLS bool) (*tls.Config, error) {
	if !useTLS {
		if s.CAFile != "" || s.CACert != "" || s.ClientCert != "" || s.ClientCertFile != "" {
			return nil, fmt.Errorf("%w: TLS material given but the broker URL is not a TLS one; use mqtts:// (or useTls: true)", ErrSettings)
		}
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: serverHost}
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
		pool, err := loadCAs(s.CAFile)
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

// loadCAs reads a PEM file, or every regular file of a folder (a mounted trust bundle), into a pool.
func loadCAs(path string) (*x509.CertPool, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%w: caFile=%q: %v", ErrSettings, path, err)
	}
	files := []string{path}
	if fi.IsDir() {
		entries, err := os.ReadDir(path)
		if err != nil {
			return nil, fmt.Errorf("%w: caFile=%q: %v", ErrSettings, path, err)
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
			return nil, fmt.Errorf("%w: caFile=%q: %v", ErrSettings, f, err)
		}
		for block, rest := pem.Decode(data); block != nil; block, rest = pem.Decode(rest) {
			if block.Type != "CERTIFICATE" {
				continue
			}
			cert, err := x509.ParseCertificate(block.Bytes)
			if err != nil {
				return nil, fmt.Errorf("%w: caFile=%q: %v", ErrSettings, f, err)
			}
			pool.AddCert(cert)
			found++
		}
	}
	if found == 0 {
		return nil, fmt.Errorf("%w: caFile=%q holds no PEM certificate", ErrSettings, path)
	}
	return pool, nil
}
