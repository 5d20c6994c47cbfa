package broker

import (
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

// The broker creates a missing data directory (and its missing parents) 0700, whatever the umask
// lets through, and says nothing about it.
func TestDataDirCreated0700(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "parent", "data")
	var logs testutil.SyncBuffer
	newBroker(t, func(o *Options) {
		o.DataDir = dir
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	for _, d := range []string{dir, filepath.Dir(dir)} {
		fi, err := os.Stat(d)
		require.NoError(t, err)
		require.Equal(t, fs.FileMode(0o700), fi.Mode().Perm(), "%s", d)
	}
	require.NotContains(t, logs.String(), "data directory is accessible")
	files, err := os.ReadDir(dir)
	require.NoError(t, err)
	for _, f := range files {
		fi, err := f.Info()
		require.NoError(t, err)
		require.Zero(t, fi.Mode().Perm()&0o077, "%s has mode %v", f.Name(), fi.Mode())
	}
}

// An existing data directory keeps its mode (it may be a volume the broker does not own), but group
// or other access is warned about, naming the path and the mode; a 0700 one is not.
func TestDataDirOpenModeWarned(t *testing.T) {
	for _, mode := range []fs.FileMode{0o755, 0o770, 0o701} {
		dir := t.TempDir()
		require.NoError(t, os.Chmod(dir, mode))
		var logs testutil.SyncBuffer
		b := newBroker(t, func(o *Options) {
			o.DataDir = dir
			o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
		})
		require.NoError(t, b.Close())
		require.Contains(t, logs.String(), "the data directory is accessible to its group or to others")
		require.Contains(t, logs.String(), "path="+dir)
		require.Contains(t, logs.String(), "mode="+fsMode(mode))
		fi, err := os.Stat(dir)
		require.NoError(t, err)
		require.Equal(t, mode, fi.Mode().Perm(), "the broker changed the mode of an existing directory")
	}
	dir := t.TempDir()
	require.NoError(t, os.Chmod(dir, 0o700))
	var logs testutil.SyncBuffer
	b := newBroker(t, func(o *Options) {
		o.DataDir = dir
		o.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	})
	require.NoError(t, b.Close())
	require.NotContains(t, logs.String(), "data directory is accessible")
}

// A data directory path that is a file is refused, naming it.
func TestDataDirNotADirectory(t *testing.T) {
	f := filepath.Join(t.TempDir(), "file")
	require.NoError(t, os.WriteFile(f, nil, 0o600))
	o := NewDefaultOptions()
	o.Addr = "127.0.0.1:0"
	o.DataDir = f
	b, err := New(o)
	require.NoError(t, err)
	err = b.Start()
	require.ErrorContains(t, err, `data directory "`+f+`": not a directory`)
	_ = b.Close()
}

func fsMode(m fs.FileMode) string { return fmt.Sprintf("%04o", uint32(m)) }
