package pluggable

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// CheckSocketFolder passes, leaving nothing behind, in a folder the component may write, and
// fails naming the socket and the user where the socket could not be created.
func TestCheckSocketFolder(t *testing.T) {
	ok := t.TempDir()
	t.Setenv(socketsFolderEnv, ok)
	require.NoError(t, CheckSocketFolder("mqttv5"))
	left, err := os.ReadDir(ok)
	require.NoError(t, err)
	require.Empty(t, left, "the probe file was left in the socket folder")

	missing := filepath.Join(t.TempDir(), "missing")
	t.Setenv(socketsFolderEnv, missing)
	err = CheckSocketFolder("mqttv5")
	require.ErrorContains(t, err, "cannot create the socket "+filepath.Join(missing, "mqttv5.sock"))
	require.ErrorContains(t, err, "no such file or directory")
	require.ErrorContains(t, err, "the folder must exist and be writable by uid")
}
