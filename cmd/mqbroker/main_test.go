package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

func TestParseConfigFileAndFlags(t *testing.T) {
	dir := t.TempDir()
	f := filepath.Join(dir, "mqbroker.json")
	require.NoError(t, os.WriteFile(f, []byte(`{"addr":"127.0.0.1:2000","data_dir":"/d","max_session_queue":5}`), 0o600))
	cfg, err := parseConfig([]string{"-config", f, "-max-session-queue", "7"})
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:2000", cfg.Addr)
	require.Equal(t, "/d", cfg.DataDir)
	require.Equal(t, 7, cfg.MaxSessionQueue) // the flag wins over the file

	cfg, err = parseConfig(nil)
	require.NoError(t, err)
	require.Equal(t, "127.0.0.1:1883", cfg.Addr) // loopback by default

	require.NoError(t, os.WriteFile(f, []byte(`{"adr":"x"}`), 0o600))
	_, err = parseConfig([]string{"-config", f})
	require.ErrorContains(t, err, "adr") // unknown keys are errors, naming the key
}
