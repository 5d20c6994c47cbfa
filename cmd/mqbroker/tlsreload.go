package main

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"fmt"
	"log/slog"
	"os"
	"sync/atomic"
)

// tlsFiles serves the TLS listener's certificate, key and client CA bundle from their files and
// replaces them when the files change (cert-manager rotates them; the watcher of auth.go calls
// reload): new handshakes get the new files, open connections keep theirs. Files that do not load
// leave the last good ones in force.
type tlsFiles struct {
	cert, key, ca string
	clientAuth    tls.ClientAuthType
	cur           atomic.Pointer[tls.Config]
	sum           [sha256.Size]byte
}

func newTLSFiles(cfg config, clientAuth tls.ClientAuthType) (*tlsFiles, error) {
	f := &tlsFiles{cert: cfg.TLSCert, key: cfg.TLSKey, ca: cfg.TLSClientCA, clientAuth: clientAuth}
	c, sum, err := f.load()
	if err != nil {
		return nil, err
	}
	f.cur.Store(c)
	f.sum = sum
	return f, nil
}

// load reads the files; sum is over their contents.
func (f *tlsFiles) load() (*tls.Config, [sha256.Size]byte, error) {
	var all bytes.Buffer
	read := func(p string) ([]byte, error) {
		if p == "" {
			return nil, nil
		}
		b, err := os.ReadFile(p)
		all.Write(b)
		all.WriteByte(0)
		return b, err
	}
	certPEM, err := read(f.cert)
	if err != nil {
		return nil, [sha256.Size]byte{}, fmt.Errorf("TLS certificate: %w", err)
	}
	keyPEM, err := read(f.key)
	if err != nil {
		return nil, [sha256.Size]byte{}, fmt.Errorf("TLS key: %w", err)
	}
	caPEM, err := read(f.ca)
	if err != nil {
		return nil, [sha256.Size]byte{}, fmt.Errorf("-tls-client-ca: %w", err)
	}
	sum := sha256.Sum256(all.Bytes())
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		// The error of crypto/tls names what is wrong, not the key's bytes.
		return nil, sum, fmt.Errorf("TLS key pair %s, %s: %w", f.cert, f.key, err)
	}
	c := &tls.Config{Certificates: []tls.Certificate{pair}, MinVersion: tls.VersionTLS12}
	if f.ca != "" {
		pool, err := parseCAs(f.ca, caPEM)
		if err != nil {
			return nil, sum, err
		}
		c.ClientCAs, c.ClientAuth = pool, f.clientAuth
	}
	return c, sum, nil
}

// config is the listener's tls.Config: each handshake takes the files' current state.
func (f *tlsFiles) config() *tls.Config {
	return &tls.Config{MinVersion: tls.VersionTLS12, GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) {
		return f.cur.Load(), nil
	}}
}

// reload loads the files again when their content changed (or always); a failure keeps the last
// good ones and is logged.
func (f *tlsFiles) reload(onlyChanged bool, log *slog.Logger) {
	c, sum, err := f.load()
	if onlyChanged && sum == f.sum {
		return
	}
	f.sum = sum
	if err != nil {
		log.Error("TLS files not reloaded: keeping the last good ones", "err", err.Error())
		return
	}
	f.cur.Store(c)
	log.Info("TLS files reloaded", "cert", f.cert, "client_ca", f.ca)
}
