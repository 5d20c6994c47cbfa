package main

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// -v3-session-expiry (and v3_session_expiry in the file) sets how long a 3.1.1 clean session 0
// session is kept; by default it is the -max-session-expiry cap.
func TestV3SessionExpiryFlag(t *testing.T) {
	cfg, err := parseConfig(nil)
	require.NoError(t, err)
	require.Equal(t, uint32(0xFFFFFFFF), cfg.V3SessionExpiry)

	cfg, err = parseConfig([]string{"-v3-session-expiry", "3600"})
	require.NoError(t, err)
	require.Equal(t, uint32(3600), cfg.V3SessionExpiry)

	f := filepath.Join(t.TempDir(), "mqbroker.json")
	require.NoError(t, os.WriteFile(f, []byte(`{"v3_session_expiry":60}`), 0o600))
	cfg, err = parseConfig([]string{"-config", f})
	require.NoError(t, err)
	require.Equal(t, uint32(60), cfg.V3SessionExpiry)

	_, err = parseConfig([]string{"-v3-session-expiry", "-1"})
	require.ErrorContains(t, err, "unsigned 32-bit")
}
