package broker

import (
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
)

// buildBrokerBinary builds cmd/mqbroker into a temporary directory and returns its path.
func buildBrokerBinary(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("builds and kills a broker process; run without -short")
	}
	bin := filepath.Join(t.TempDir(), "mqbroker")
	build := exec.Command("go", "build", "-o", bin, "../cmd/mqbroker")
	build.Stderr = os.Stderr
	require.NoError(t, build.Run())
	return bin
}

// kill9 SIGKILLs a broker process and waits for it.
func kill9(t *testing.T, cmd *exec.Cmd) {
	t.Helper()
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
}

// storeBarrier returns once every store batch submitted before it is durable: the committer applies
// batches in order and a publish is acknowledged only after its own batch.
func storeBarrier(t *testing.T, addr string) {
	t.Helper()
	cl, err := tryClient(t, addr, "barrier")
	require.NoError(t, err)
	cl.publish(t, "barrier", 1, "")
	require.NoError(t, cl.Disconnect(&paho.Disconnect{}))
}

// A session resumed without subscribing again and connected when the broker is killed must not be
// taken for one offline since its previous disconnect: before the fix the resume rewrote the record
// with the old OfflineAt, so after kill -9 and restart the janitor expired the session (Session
// Present 0, its unacknowledged message gone) and published its delayed will.
func TestKill9ResumedSessionKeepsItsExpiry(t *testing.T) {
	bin := buildBrokerBinary(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	const expiry = 5 // seconds; must exceed the time from restart to resume below
	cmd, addr := startBrokerProcess(t, bin, dataDir)

	watch, err := tryClient(t, addr, "watch", withExpiry(3600))
	require.NoError(t, err)
	watch.subscribe(t, "will/#", 1)
	// probe's will (delay 0) is due at the janitor's first pass after the restart: once watch has
	// it, the pass that would have expired "c" has run.
	_, err = tryClient(t, addr, "probe", withExpiry(3600), withWill("will/probe", "probe", 0))
	require.NoError(t, err)

	c1, err := tryClient(t, addr, "c", withExpiry(expiry))
	require.NoError(t, err)
	c1.subscribe(t, "q", 1)
	require.NoError(t, c1.Disconnect(&paho.Disconnect{})) // offline time written
	// Resume without subscribing; the will has a delay longer than the session.
	_, err = tryClient(t, addr, "c", withExpiry(expiry), resume(), manualAcks(), withWill("will/c", "c", 3600))
	require.NoError(t, err)
	resumed := time.Now()
	pub, err := tryClient(t, addr, "pub")
	require.NoError(t, err)
	require.Equal(t, CodeSuccess, pub.publish(t, "q", 1, "m1").ReasonCode) // in flight, never acked
	// Connected for longer than the expiry: the previous offline time is now older than it.
	require.Eventually(t, func() bool { return time.Since(resumed) > expiry*time.Second }, 2*expiry*time.Second, 20*time.Millisecond)
	storeBarrier(t, addr)
	kill9(t, cmd)

	_, addr2 := startBrokerProcess(t, bin, dataDir)
	watch2, err := tryClient(t, addr2, "watch", withExpiry(3600), resume())
	require.NoError(t, err)
	require.True(t, watch2.connack.SessionPresent)
	cWill := false
	// nextWill returns the topic of watch2's next message, noting c's will.
	nextWill := func() string {
		topic := watch2.next(t).Topic
		cWill = cWill || topic == "will/c"
		return topic
	}
	for nextWill() != "will/probe" {
	}
	c2, err := tryClient(t, addr2, "c", withExpiry(expiry), resume())
	require.NoError(t, err)
	require.True(t, c2.connack.SessionPresent, "the session connected at the crash was expired")
	m := c2.next(t)
	require.Equal(t, "m1", string(m.Payload))
	// c's will was cancelled by the resume; it must not have been published at the restart.
	pub2, err := tryClient(t, addr2, "pub")
	require.NoError(t, err)
	pub2.publish(t, "will/marker", 1, "marker")
	for nextWill() != "will/marker" {
	}
	require.False(t, cWill, "c's delayed will was published at the restart")
}

// A member that resumes its session with expiry 0 keeps its in-flight shared-subscription messages
// under their group in the store (as any non-persistent member does): before the fix the switch from
// expiry > 0 to 0 deleted them with the session record, and a kill -9 lost a message whose PUBREC
// the publisher had received.
func TestKill9SharedEntriesSurviveSwitchToExpiryZero(t *testing.T) {
	bin := buildBrokerBinary(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	cmd, addr := startBrokerProcess(t, bin, dataDir)

	m1, err := tryClient(t, addr, "member", withExpiry(3600), manualAcks())
	require.NoError(t, err)
	m1.subscribe(t, "$share/g/jobs", 2)
	pub, err := tryClient(t, addr, "pub")
	require.NoError(t, err)
	// QoS 2: an in-flight QoS 2 message stays with its member's session across a reconnect.
	require.Equal(t, CodeSuccess, pub.publish(t, "jobs", 2, "job").ReasonCode)
	require.Equal(t, "job", string(m1.next(t).Payload)) // never acknowledged
	require.NoError(t, m1.Disconnect(&paho.Disconnect{}))
	m2, err := tryClient(t, addr, "member", withExpiry(0), resume(), manualAcks())
	require.NoError(t, err)
	require.True(t, m2.connack.SessionPresent)
	resent := m2.next(t)
	require.Equal(t, "job", string(resent.Payload))
	require.True(t, resent.Duplicate())
	storeBarrier(t, addr)
	kill9(t, cmd)

	_, addr2 := startBrokerProcess(t, bin, dataDir)
	w, err := tryClient(t, addr2, "worker")
	require.NoError(t, err)
	w.subscribe(t, "$share/g/jobs", 2)
	require.Equal(t, "job", string(w.next(t).Payload), "the acknowledged shared message was lost")
}

// A publish that reaches the store after Close (the key-value expiry loop's Publish can pass the
// closed check while Close runs) must fail with ErrClosed: before the fix the committer called the
// publish callback, which takes b.mu, on the publisher's goroutine under b.mu, which deadlocked.
func TestPublishAfterStoreCloseDoesNotDeadlock(t *testing.T) {
	o := NewDefaultOptions()
	o.Addr, o.DataDir = "127.0.0.1:0", t.TempDir()
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	b, err := New(o)
	require.NoError(t, err)
	require.NoError(t, b.Start())
	cl := dialClient(t, b, "sub", withExpiry(60))
	cl.subscribe(t, "t", 1)
	require.NoError(t, b.Close())

	done := make(chan error, 1)
	go b.publish(&Message{Topic: "t", QoS: 1, Payload: []byte("late")}, nil, func(_ int, err error) { done <- err })
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrClosed)
	case <-time.After(waitFor):
		t.Fatal("publish after the store closed deadlocked")
	}
	b.mu.Lock() // the broker lock is free again
	b.mu.Unlock()
}

// The committer's contract: done never runs on the submitter's goroutine, so a caller holding a
// lock that done takes cannot deadlock, after close included.
func TestCommitterSubmitAfterCloseRunsDoneElsewhere(t *testing.T) {
	c := newCommitter(memBackend{}, 0)
	c.close()
	var mu sync.Mutex
	done := make(chan error, 1)
	go func() {
		mu.Lock() // as the broker holds b.mu around submit
		defer mu.Unlock()
		c.submit([]op{{kind: opPutRetained, owner: "t"}}, func(err error) {
			mu.Lock()
			defer mu.Unlock()
			done <- err
		})
	}()
	select {
	case err := <-done:
		require.ErrorIs(t, err, ErrClosed)
	case <-time.After(waitFor):
		t.Fatal("submit after close ran done on the caller's goroutine")
	}
}
