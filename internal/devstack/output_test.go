package devstack

import (
	"os"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// A write to a pipe whose reader is gone calls onBreak once with EPIPE, and every write after it
// is discarded without an error. (This pipe is not stdout, so Go returns EPIPE without dying of
// SIGPIPE; for stdout mqdapr-run catches SIGPIPE, which TestMakeRunStopsOnBrokenOutput covers.)
func TestStopOnBrokenOutput(t *testing.T) {
	r, w, err := os.Pipe()
	require.NoError(t, err)
	defer w.Close()
	var breaks []error
	out := StopOnBrokenOutput(w, func(err error) { breaks = append(breaks, err) })
	n, err := out.Write([]byte("line\n"))
	require.NoError(t, err)
	assert.Equal(t, 5, n)
	assert.Empty(t, breaks)
	require.NoError(t, r.Close())
	for range 3 {
		n, err := out.Write([]byte("more\n"))
		require.NoError(t, err, "the stop must not fail on its own log lines")
		assert.Equal(t, 5, n)
	}
	require.Len(t, breaks, 1)
	assert.ErrorIs(t, breaks[0], syscall.EPIPE)
}
