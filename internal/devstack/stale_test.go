package devstack

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The pid file is held while a supervisor runs; a second one is refused with the holder's pid, and
// a file left by a killed supervisor is taken over and reported.
func TestLockRefusesSecondSupervisorAndReportsKilledOne(t *testing.T) {
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, PidFileName), []byte("4242\n"), 0o644)) // left by a kill -9
	l, err := Lock(dir)
	require.NoError(t, err)
	assert.Equal(t, 4242, l.Stale)
	b, _ := os.ReadFile(filepath.Join(dir, PidFileName))
	assert.Equal(t, strconv.Itoa(os.Getpid())+"\n", string(b))

	_, err = Lock(dir) // flock is per open file: a second open in this process conflicts too
	require.ErrorIs(t, err, ErrStackRunning)
	assert.Contains(t, err.Error(), fmt.Sprintf("pid %d holds", os.Getpid()))

	l.Release()
	l2, err := Lock(dir)
	require.NoError(t, err)
	assert.Zero(t, l2.Stale, "a clean stop leaves no pid behind")
	l2.Release()
}

// A socket nothing listens on is removed; one a live process serves is refused with its pid; other
// files are left alone.
func TestCleanSockets(t *testing.T) {
	dir, err := os.MkdirTemp("", "mqd-clean-") // short: socket paths are limited to 108 bytes
	require.NoError(t, err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	stale := filepath.Join(dir, "stale.sock")
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: stale, Net: "unix"})
	require.NoError(t, err)
	l.SetUnlinkOnClose(false)
	require.NoError(t, l.Close()) // the file stays, nothing listens: what a killed component leaves
	require.NoError(t, os.WriteFile(filepath.Join(dir, "sink.ready"), nil, 0o644))

	removed, err := CleanSockets(dir)
	require.NoError(t, err)
	assert.Equal(t, []string{stale}, removed)
	_, err = os.Stat(filepath.Join(dir, "sink.ready"))
	assert.NoError(t, err, "not a socket: kept")

	served := filepath.Join(dir, "served.sock")
	ls, err := net.Listen("unix", served)
	require.NoError(t, err)
	defer ls.Close()
	_, err = CleanSockets(dir)
	require.True(t, errors.Is(err, ErrSocketInUse), "%v", err)
	assert.Contains(t, err.Error(), fmt.Sprintf("served by pid %d", os.Getpid()))
	_, err = os.Stat(served)
	assert.NoError(t, err, "a served socket is never removed")

	removed, err = CleanSockets(filepath.Join(dir, "missing"))
	assert.NoError(t, err)
	assert.Empty(t, removed)
}
