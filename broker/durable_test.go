package broker

import (
	"bytes"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
)

// startDurable starts a broker on dir; the caller closes it.
func startDurable(t *testing.T, dir string) *Broker {
	t.Helper()
	o := NewDefaultOptions()
	o.Addr, o.DataDir = "127.0.0.1:0", dir
	o.CommitInterval = 2 * time.Millisecond // exercises the batching delay
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := New(o)
	require.NoError(t, err)
	require.NoError(t, b.Start())
	return b
}

// Sessions, subscriptions, queued messages, group queues and retained messages survive a restart on
// the same data directory [MQTT-4.1.0-1] [MQTT-3.3.1-5].
func TestDurableRestart(t *testing.T) {
	dir := t.TempDir()
	b := startDurable(t, dir)
	addr := b.Addrs()[0]
	sub, err := tryClient(t, addr, "sub", withExpiry(3600))
	require.NoError(t, err)
	sub.subscribe(t, "q", 1)
	require.NoError(t, sub.Disconnect(&paho.Disconnect{}))
	mem, err := tryClient(t, addr, "member", withExpiry(3600))
	require.NoError(t, err)
	mem.subscribe(t, "$share/g/jobs", 1)
	require.NoError(t, mem.Disconnect(&paho.Disconnect{}))
	pub, err := tryClient(t, addr, "pub")
	require.NoError(t, err)
	for i := range 3 {
		pub.publish(t, "q", 1, fmt.Sprint("q", i))
		pub.publish(t, "jobs", 2, fmt.Sprint("j", i))
	}
	_, err = pub.Publish(ctxT(t), &paho.Publish{Topic: "r", QoS: 1, Retain: true, Payload: []byte("retained")})
	require.NoError(t, err)
	require.NoError(t, b.Close())

	b2 := startDurable(t, dir)
	defer func() { require.NoError(t, b2.Close()) }()
	addr = b2.Addrs()[0]
	sub2, err := tryClient(t, addr, "sub", withExpiry(3600), resume())
	require.NoError(t, err)
	require.True(t, sub2.connack.SessionPresent)
	for i := range 3 {
		require.Equal(t, fmt.Sprint("q", i), string(sub2.next(t).Payload))
	}
	mem2, err := tryClient(t, addr, "member", withExpiry(3600), resume())
	require.NoError(t, err)
	for i := range 3 {
		require.Equal(t, fmt.Sprint("j", i), string(mem2.next(t).Payload))
	}
	fresh, err := tryClient(t, addr, "fresh")
	require.NoError(t, err)
	fresh.subscribe(t, "r", 1)
	require.Equal(t, "retained", string(fresh.next(t).Payload))
}

// The data directory carries a format version; another version is refused, in the log's header or
// in a bbolt file of format 1 still to be migrated, and the refused file is left as it was.
func TestDataDirFormatVersion(t *testing.T) {
	start := func(dir string) error {
		o := NewDefaultOptions()
		o.Addr, o.DataDir = "127.0.0.1:0", dir
		b, err := New(o)
		require.NoError(t, err)
		return b.Start()
	}
	dir := t.TempDir()
	b := startDurable(t, dir)
	require.NoError(t, b.Close())
	path := filepath.Join(dir, logName)
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	require.True(t, bytes.HasPrefix(data, []byte(logMagic)))
	other := bytes.Replace(data, []byte(logMagic), []byte("mqbroker-log\x0099\n"), 1)
	require.NoError(t, os.WriteFile(path, other, 0o600))
	require.ErrorIs(t, start(dir), ErrDataDirVersion)
	after, err := os.ReadFile(path)
	require.NoError(t, err)
	require.Equal(t, other, after)

	old := t.TempDir()
	bb, err := openBolt(old)
	require.NoError(t, err)
	require.NoError(t, bb.db.Update(func(tx *boltTx) error { return tx.Bucket([]byte(bucketMeta)).Put([]byte(keyFormat), []byte("99")) }))
	require.NoError(t, bb.close())
	require.ErrorIs(t, start(old), ErrDataDirVersion)
	_, err = os.Stat(filepath.Join(old, oldBoltName))
	require.NoError(t, err)
	_, err = os.Stat(filepath.Join(old, logName))
	require.ErrorIs(t, err, os.ErrNotExist)
}

// A persistent session's expiry keeps counting from its disconnection across a restart.
func TestSessionExpiryAcrossRestart(t *testing.T) {
	dir := t.TempDir()
	b := startDurable(t, dir)
	c, err := tryClient(t, b.Addrs()[0], "short", withExpiry(1))
	require.NoError(t, err)
	c.subscribe(t, "t", 1)
	require.NoError(t, c.Disconnect(&paho.Disconnect{}))
	require.NoError(t, b.Close())
	b2 := startDurable(t, dir)
	defer func() { require.NoError(t, b2.Close()) }()
	require.Eventually(t, func() bool {
		b2.mu.Lock()
		defer b2.mu.Unlock()
		return b2.sessions["short"] == nil
	}, waitFor, 20*time.Millisecond)
	r, err := tryClient(t, b2.Addrs()[0], "pub")
	require.NoError(t, err)
	require.Equal(t, CodeNoMatchingSubscribers, r.publish(t, "t", 1, "x").ReasonCode)
}

// A delayed will not yet published when the broker stops is published after a restart
// [MQTT-3.1.3-9]: the will is part of the stored session.
func TestWillSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	b := startDurable(t, dir)
	_, err := tryClient(t, b.Addrs()[0], "mortal", withExpiry(60), withWill("will/mortal", "bye", 1))
	require.NoError(t, err)
	require.NoError(t, b.Close()) // the connection ends without DISCONNECT: the will is pending
	b2 := startDurable(t, dir)
	defer func() { require.NoError(t, b2.Close()) }()
	w, err := tryClient(t, b2.Addrs()[0], "watcher")
	require.NoError(t, err)
	w.subscribe(t, "will/#", 1)
	require.Equal(t, "bye", string(w.next(t).Payload))
}
