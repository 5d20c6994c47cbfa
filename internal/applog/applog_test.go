package applog

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

const testMagic = "applog-test 1\n"

// records opens the log at path and returns its payloads.
func records(t *testing.T, path string) []string {
	t.Helper()
	var got []string
	l, _, err := Open(path, testMagic, func(p []byte) error { got = append(got, string(p)); return nil })
	require.NoError(t, err)
	require.NoError(t, l.Close())
	return got
}

// open opens path and rewrites it with live, as a store does at open.
func open(t *testing.T, path string, live ...string) *Log {
	t.Helper()
	l, _, err := Open(path, testMagic, func([]byte) error { return nil })
	require.NoError(t, err)
	require.NoError(t, l.Rewrite(emitAll(live)))
	return l
}

func emitAll(live []string) func(func([]byte) error) error {
	return func(emit func([]byte) error) error {
		for _, r := range live {
			if err := emit([]byte(r)); err != nil {
				return err
			}
		}
		return nil
	}
}

// Records appended, and those a rewrite wrote, are read back in order after a reopen; a missing file
// is an empty log; another header is refused with ErrHeader.
func TestAppendRewriteReopen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.log")
	l, exists, err := Open(path, testMagic, func([]byte) error { return errors.New("no record expected") })
	require.NoError(t, err)
	require.False(t, exists)
	require.True(t, l.NeedsRewrite())
	require.Error(t, l.Append([]byte("too early")))
	require.NoError(t, l.Rewrite(emitAll([]string{"a", "b"})))
	require.False(t, l.NeedsRewrite())
	require.NoError(t, l.Append([]byte("c")))
	require.NoError(t, l.Close())
	require.Equal(t, []string{"a", "b", "c"}, records(t, path))

	_, exists, err = Open(path, "applog-test 2\n", func([]byte) error { return nil })
	require.ErrorIs(t, err, ErrHeader)
	require.True(t, exists)
}

// A record torn by a crash (cut short, a byte that never reached the disk, a length past the end)
// ends the log: the records before it are read; the rewrite at open drops it and appends go on.
func TestTornLastRecord(t *testing.T) {
	for name, tear := range map[string]func(data []byte, start, end int64) []byte{
		"cut short":  func(data []byte, start, end int64) []byte { return data[:start+(end-start)/2] },
		"bad byte":   func(data []byte, _, end int64) []byte { data[end-1] ^= 0xFF; return data },
		"bad length": func(data []byte, start, _ int64) []byte { data[start+2] = 0x7F; return data },
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "x.log")
			l := open(t, path)
			require.NoError(t, l.Append([]byte("kept")))
			start := l.Size()
			require.NoError(t, l.Append([]byte("torn record")))
			end := l.Size()
			require.NoError(t, l.Close())
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path, tear(data, start, end), 0o600))

			got := records(t, path)
			require.Equal(t, []string{"kept"}, got)
			l = open(t, path, got...)
			require.NoError(t, l.Append([]byte("next")))
			require.NoError(t, l.Close())
			require.Equal(t, []string{"kept", "next"}, records(t, path))
		})
	}
}

// An Append that fails makes NeedsRewrite true; the rewrite puts a fresh file in place, in which
// nothing of the failed record can be read, and appends go on.
func TestFailedAppendNeedsRewrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.log")
	l := open(t, path)
	require.NoError(t, l.Append([]byte("a")))
	require.NoError(t, l.f.Close()) // the next write fails
	require.Error(t, l.Append([]byte("failed")))
	require.True(t, l.NeedsRewrite())
	require.NoError(t, l.Rewrite(emitAll([]string{"a"})))
	require.NoError(t, l.Append([]byte("b")))
	require.NoError(t, l.Close())
	require.Equal(t, []string{"a", "b"}, records(t, path))
}

// The log asks for a rewrite once it has doubled since the last one, and the rewrite shrinks it to
// the live records; records larger than the preallocated zeros extend the file.
func TestRewriteAfterGrowth(t *testing.T) {
	path := filepath.Join(t.TempDir(), "x.log")
	l := open(t, path)
	big := make([]byte, Prealloc+100) // more than the zeros ahead
	big[0] = 'x'
	n := 0
	for !l.NeedsRewrite() {
		require.NoError(t, l.Append(big))
		n++
	}
	require.GreaterOrEqual(t, l.Size(), int64(minRewrite))
	require.NoError(t, l.Rewrite(emitAll([]string{"live"})))
	require.Less(t, l.Size(), int64(100))
	require.NoError(t, l.Close())
	require.Equal(t, []string{"live"}, records(t, path))
	require.Equal(t, minRewrite/len(big)+1, n)
}
