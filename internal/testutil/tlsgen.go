package testutil

import (
	"os"
	"path/filepath"
	"testing"
)

// TLSFiles are PEM files of a generated CA and a server certificate it signed.
type TLSFiles struct {
	CA, Cert, Key string // paths
	CAPEM         []byte
}

// GenerateTLS makes a CA and a server certificate for 127.0.0.1 and "localhost" in a temp folder.
func GenerateTLS(t testing.TB, commonName string) *TLSFiles {
	t.Helper()
	dir := t.TempDir()
	ca := NewCA(t, commonName+" test CA")
	cert, key := ca.Issue(t, "localhost", true, "localhost", "127.0.0.1")
	f := &TLSFiles{
		CA:    filepath.Join(dir, "ca.pem"),
		Cert:  filepath.Join(dir, "server.pem"),
		Key:   filepath.Join(dir, "server-key.pem"),
		CAPEM: ca.PEM,
	}
	for p, b := range map[string][]byte{f.CA: f.CAPEM, f.Cert: cert, f.Key: key} {
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return f
}
