package broker

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
)

// startBrokerProcess runs the mqbroker binary on dataDir and returns its address.
func startBrokerProcess(t *testing.T, bin, dataDir string) (*exec.Cmd, string) {
	t.Helper()
	// -kv=false: this test is about the broker's own durability, not the key-value service.
	cmd := exec.Command(bin, "-addr", "127.0.0.1:0", "-data-dir", dataDir, "-log-level", "warn", "-kv=false")
	out, err := cmd.StdoutPipe()
	require.NoError(t, err)
	cmd.Stderr = os.Stderr
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = cmd.Wait()
	})
	lines := make(chan string, 1)
	go func() {
		line, _ := bufio.NewReader(out).ReadString('\n')
		lines <- line
		_, _ = bufio.NewReader(out).WriteTo(discard{})
	}()
	select {
	case line := <-lines:
		addr := strings.Trim(strings.TrimPrefix(strings.TrimSpace(line), "listening "), "[]")
		require.NotEmpty(t, addr, "broker printed %q", line)
		return cmd, addr
	case <-time.After(waitFor):
		t.Fatal("broker process did not start")
		return nil, ""
	}
}

type discard struct{}

func (discard) Write(p []byte) (int, error) { return len(p), nil }

// TestKill9KeepsAcknowledgedMessages SIGKILLs a broker process while publishers stream QoS 1 and 2
// messages, restarts it on the same data directory, and checks that every message whose PUBACK or
// PUBREC the publisher received is delivered afterwards [MQTT-4.3.2-3] [MQTT-4.3.3-3] (the broker
// owns a message once it acknowledged it).
func TestKill9KeepsAcknowledgedMessages(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and kills a broker process; run without -short")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "mqbroker")
	build := exec.Command("go", "build", "-o", bin, "../cmd/mqbroker")
	build.Stderr = os.Stderr
	require.NoError(t, build.Run())
	dataDir := filepath.Join(dir, "data")

	cmd, addr := startBrokerProcess(t, bin, dataDir)
	received := sync.Map{}
	record := func(cl *client, stop <-chan struct{}) {
		for {
			select {
			case m := <-cl.msgs:
				received.Store(string(m.Payload), true)
			case <-stop:
				return
			}
		}
	}
	sub, err := tryClient(t, addr, "sub", withExpiry(3600))
	require.NoError(t, err)
	sub.subscribe(t, "stream/#", 2)
	member, err := tryClient(t, addr, "member", withExpiry(3600))
	require.NoError(t, err)
	member.subscribe(t, "$share/g/jobs", 2)
	require.NoError(t, member.Disconnect(&paho.Disconnect{})) // the group has no connected member
	// A connected non-persistent member that never acknowledges: its in-flight group messages must
	// survive the crash under the group.
	worker, err := tryClient(t, addr, "worker", manualAcks())
	require.NoError(t, err)
	worker.subscribe(t, "$share/w/work", 2)
	stop1 := make(chan struct{})
	go record(sub, stop1)

	var acked sync.Map
	var ackedCount atomicCounter
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for p := range 4 {
		pub, err := tryClient(t, addr, fmt.Sprint("pub", p))
		require.NoError(t, err)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				topic, qos := "stream/a", byte(1+i%2)
				switch i % 4 {
				case 0:
					topic = "jobs"
				case 1:
					topic = "work"
				}
				payload := fmt.Sprintf("%s/p%d/%d", topic, p, i)
				pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
				r, err := pub.Publish(pctx, &paho.Publish{Topic: topic, QoS: qos, Payload: []byte(payload)})
				pcancel()
				if err != nil || r.ReasonCode >= 0x80 {
					return // the broker died: this one was not acknowledged
				}
				acked.Store(payload, true)
				ackedCount.add()
			}
		}()
	}
	require.Eventually(t, func() bool { return ackedCount.get() >= 400 }, 60*time.Second, 5*time.Millisecond)
	require.NoError(t, cmd.Process.Signal(syscall.SIGKILL))
	_ = cmd.Wait()
	cancel()
	wg.Wait()
	close(stop1)
	t.Logf("acknowledged before kill: %d, received before kill: %d", ackedCount.get(), countMap(&received))

	_, addr2 := startBrokerProcess(t, bin, dataDir)
	sub2, err := tryClient(t, addr2, "sub", withExpiry(3600), resume())
	require.NoError(t, err)
	require.True(t, sub2.connack.SessionPresent)
	member2, err := tryClient(t, addr2, "member", withExpiry(3600), resume())
	require.NoError(t, err)
	worker2, err := tryClient(t, addr2, "worker2")
	require.NoError(t, err)
	worker2.subscribe(t, "$share/w/work", 2)
	stop2 := make(chan struct{})
	defer close(stop2)
	go record(sub2, stop2)
	go record(member2, stop2)
	go record(worker2, stop2)
	missing := func() []string {
		var out []string
		acked.Range(func(k, _ any) bool {
			if _, ok := received.Load(k); !ok {
				out = append(out, k.(string))
			}
			return true
		})
		return out
	}
	var lost []string
	require.Eventually(t, func() bool { lost = missing(); return len(lost) == 0 }, 30*time.Second, 20*time.Millisecond)
	require.Empty(t, lost, "acknowledged but never delivered")
}

// TestKill9SubscriberAcksRedeliverNeverLose SIGKILLs a broker process while 4 publishers stream QoS 1
// and QoS 2 messages to two connected persistent subscribers (QoS 1 and QoS 2) that acknowledge every
// message, so that subscriber acknowledgements (stored lazily, with the next commit) are pending at
// the kill, and to a third persistent subscriber that is offline, so that every message is stored
// for it. After a restart on the same data directory every message a publisher had an
// acknowledgement for reaches each subscriber, before or after the kill; messages a subscriber had
// acknowledged may come again (at least once), and the test reports how many did.
func TestKill9SubscriberAcksRedeliverNeverLose(t *testing.T) {
	bin := buildBrokerBinary(t)
	dataDir := filepath.Join(t.TempDir(), "data")
	cmd, addr := startBrokerProcess(t, bin, dataDir)

	type subscriber struct {
		id        string
		qos       byte
		offline   bool     // subscribed, then disconnected until the restart
		before    sync.Map // payloads received (and acknowledged) before the kill
		after     sync.Map // payloads received after the restart
		nBefore   atomicCounter
		redeliver atomicCounter // received after the restart though acknowledged before the kill
	}
	subs := []*subscriber{{id: "sub1", qos: 1}, {id: "sub2", qos: 2}, {id: "away", qos: 2, offline: true}}
	stop1 := make(chan struct{})
	var recv sync.WaitGroup
	for _, s := range subs {
		cl, err := tryClient(t, addr, s.id, withExpiry(3600), withReceiveMax(100))
		require.NoError(t, err)
		cl.subscribe(t, "flow/#", s.qos)
		if s.offline {
			require.NoError(t, cl.Disconnect(&paho.Disconnect{}))
			continue
		}
		recv.Add(1)
		go func() {
			defer recv.Done()
			for {
				select {
				case m := <-cl.msgs:
					s.before.Store(string(m.Payload), true)
					s.nBefore.add()
				case <-stop1:
					return
				}
			}
		}()
	}

	var acked sync.Map
	var ackedCount atomicCounter
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	for p := range 4 {
		pub, err := tryClient(t, addr, fmt.Sprint("pub", p))
		require.NoError(t, err)
		for w := range 8 { // 8 publishes in flight per publisher
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := 0; ctx.Err() == nil; i++ {
					payload := fmt.Sprintf("p%d/w%d/%d", p, w, i)
					pctx, pcancel := context.WithTimeout(ctx, 2*time.Second)
					r, err := pub.Publish(pctx, &paho.Publish{Topic: "flow/x", QoS: byte(1 + i%2), Payload: []byte(payload)})
					pcancel()
					if err != nil || r.ReasonCode >= 0x80 {
						return // the broker died: this one was not acknowledged
					}
					acked.Store(payload, true)
					ackedCount.add()
				}
			}()
		}
	}
	// Kill while messages flow both ways: publishers acknowledged and subscribers acknowledging.
	require.Eventually(t, func() bool {
		return ackedCount.get() >= 3000 && subs[0].nBefore.get() >= 1000 && subs[1].nBefore.get() >= 1000
	}, 60*time.Second, 5*time.Millisecond)
	kill9(t, cmd)
	cancel()
	wg.Wait()
	close(stop1)
	recv.Wait()

	_, addr2 := startBrokerProcess(t, bin, dataDir)
	stop2 := make(chan struct{})
	defer close(stop2)
	for _, s := range subs {
		cl, err := tryClient(t, addr2, s.id, withExpiry(3600), withReceiveMax(100), resume())
		require.NoError(t, err)
		require.True(t, cl.connack.SessionPresent, s.id)
		go func() {
			for {
				select {
				case m := <-cl.msgs:
					k := string(m.Payload)
					if _, ok := s.before.Load(k); ok {
						s.redeliver.add()
					}
					s.after.Store(k, true)
				case <-stop2:
					return
				}
			}
		}()
	}
	missing := func(s *subscriber) []string {
		var out []string
		acked.Range(func(k, _ any) bool {
			_, b := s.before.Load(k)
			_, a := s.after.Load(k)
			if !b && !a {
				out = append(out, k.(string))
			}
			return true
		})
		return out
	}
	for _, s := range subs {
		var lost []string
		require.Eventually(t, func() bool { lost = missing(s); return len(lost) == 0 }, 30*time.Second, 20*time.Millisecond)
		require.Empty(t, lost, "%s: acknowledged to a publisher but never delivered", s.id)
	}
	for _, s := range subs {
		t.Logf("%s: %d acknowledged to publishers, %d received before the kill, %d of them again after the restart",
			s.id, ackedCount.get(), s.nBefore.get(), s.redeliver.get())
	}
}

type atomicCounter struct {
	mu sync.Mutex
	n  int
}

func (c *atomicCounter) add() { c.mu.Lock(); c.n++; c.mu.Unlock() }
func (c *atomicCounter) get() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n
}

func countMap(m *sync.Map) int {
	n := 0
	m.Range(func(_, _ any) bool { n++; return true })
	return n
}
