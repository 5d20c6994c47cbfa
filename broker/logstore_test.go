package broker

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/stretchr/testify/require"
)

// logState opens the log of dir, returns its state as a liveState and closes it.
func logState(t *testing.T, dir string) *liveState {
	t.Helper()
	l, err := openLog(dir)
	require.NoError(t, err)
	defer func() { require.NoError(t, l.close()) }()
	return l.live
}

// Every kind of op survives a reopen as the ops left it: puts replaced, deletes applied, a deleted
// session taking its entries and inbound packet ids with it.
func TestLogStoreReopen(t *testing.T) {
	dir := t.TempDir()
	l, err := openLog(dir)
	require.NoError(t, err)
	require.NoError(t, l.apply([]op{
		{kind: opPutSession, owner: "a", val: []byte("a1")},
		{kind: opPutSession, owner: "b", val: []byte("b1")},
		{kind: opPutEntry, owner: "sa", seq: 1, val: []byte("e1")},
		{kind: opPutEntry, owner: "sb", seq: 2, val: []byte("e2")},
		{kind: opPutEntry, owner: "gg\x00f", seq: 3, val: []byte("e3")},
		{kind: opPutInbound, owner: "a", seq: 7},
		{kind: opPutInbound, owner: "b", seq: 8},
		{kind: opPutRetained, owner: "t/1", val: []byte("r1")},
		{kind: opPutRetained, owner: "t/2", val: []byte("r2")},
	}))
	require.NoError(t, l.apply([]op{
		{kind: opPutSession, owner: "b", val: []byte("b2")},
		{kind: opDelSession, owner: "a"},
		{kind: opDelEntry, owner: "gg\x00f", seq: 3},
		{kind: opPutEntry, owner: "sb", seq: 4, val: []byte{}},
		{kind: opDelRetained, owner: "t/1"},
		{kind: opDelInbound, owner: "b", seq: 8},
		{kind: opPutInbound, owner: "b", seq: 9},
	}))
	require.NoError(t, l.close())
	got := logState(t, dir)
	require.Equal(t, map[string][]byte{"b": []byte("b2")}, got.sessions)
	require.Equal(t, map[string]map[uint64][]byte{"sb": {2: []byte("e2"), 4: {}}}, got.entries)
	require.Equal(t, map[string][]byte{"t/2": []byte("r2")}, got.retained)
	require.Equal(t, map[string]map[uint16]bool{"b": {9: true}}, got.inbound)
}

// A record torn by a crash (cut short, or with a byte that never reached the disk) ends the log:
// the records before it are read, and the log goes on after them.
func TestLogStoreTornLastRecord(t *testing.T) {
	for name, tear := range map[string]func(data []byte, start, end int64) []byte{
		"cut short":  func(data []byte, start, end int64) []byte { return data[:start+(end-start)/2] },
		"bad byte":   func(data []byte, start, end int64) []byte { data[end-1] ^= 0xFF; return data },
		"bad length": func(data []byte, start, _ int64) []byte { data[start+2] = 0x7F; return data },
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			l, err := openLog(dir)
			require.NoError(t, err)
			require.NoError(t, l.apply([]op{{kind: opPutSession, owner: "kept", val: []byte("1")}}))
			start := l.log.Size()
			require.NoError(t, l.apply([]op{{kind: opPutSession, owner: "torn", val: []byte("2")}}))
			end := l.log.Size()
			require.NoError(t, l.close())
			path := filepath.Join(dir, logName)
			data, err := os.ReadFile(path)
			require.NoError(t, err)
			require.NoError(t, os.WriteFile(path, tear(data, start, end), 0o600))

			l, err = openLog(dir)
			require.NoError(t, err)
			require.Equal(t, map[string][]byte{"kept": []byte("1")}, l.live.sessions)
			require.NoError(t, l.apply([]op{{kind: opPutSession, owner: "next", val: []byte("3")}}))
			require.NoError(t, l.close())
			require.Equal(t, map[string][]byte{"kept": []byte("1"), "next": []byte("3")}, logState(t, dir).sessions)
		})
	}
}

// A data directory of format 1 (bbolt) is migrated into the log at the first start: its state is
// kept and the bbolt file removed.
func TestLogStoreMigratesBolt(t *testing.T) {
	dir := t.TempDir()
	bb, err := openBolt(dir)
	require.NoError(t, err)
	require.NoError(t, bb.apply([]op{
		{kind: opPutSession, owner: "a", val: []byte("s")},
		{kind: opPutEntry, owner: "sa", seq: 3, val: []byte("e")},
		{kind: opPutRetained, owner: "t", val: []byte("r")},
		{kind: opPutInbound, owner: "a", seq: 5},
	}))
	require.NoError(t, bb.close())
	got := logState(t, dir)
	require.Equal(t, map[string][]byte{"a": []byte("s")}, got.sessions)
	require.Equal(t, map[string]map[uint64][]byte{"sa": {3: []byte("e")}}, got.entries)
	require.Equal(t, map[string][]byte{"t": []byte("r")}, got.retained)
	require.Equal(t, map[string]map[uint16]bool{"a": {5: true}}, got.inbound)
	_, err = os.Stat(filepath.Join(dir, oldBoltName))
	require.ErrorIs(t, err, os.ErrNotExist)
	require.Equal(t, got.sessions, logState(t, dir).sessions) // and read back from the log

	// A bbolt file beside the log was left by a migration cut short after the log was in place: the
	// log holds its state already, so the file is removed, not read again.
	bb, err = openBolt(dir)
	require.NoError(t, err)
	require.NoError(t, bb.apply([]op{{kind: opPutSession, owner: "stale", val: []byte("x")}}))
	require.NoError(t, bb.close())
	require.Equal(t, got.sessions, logState(t, dir).sessions)
	_, err = os.Stat(filepath.Join(dir, oldBoltName))
	require.ErrorIs(t, err, os.ErrNotExist)
}
