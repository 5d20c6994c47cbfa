package broker

import (
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
)

// Under concurrent publishers and subscribers that keep dropping their connections, every message
// acknowledged to a publisher reaches every persistent subscriber and the shared group at least once
// [MQTT-4.3.2-3] [MQTT-4.4.0-1] [MQTT-4.8.2-3]. Run with -race it also checks the locking.
func TestStressReconnectsNoLoss(t *testing.T) {
	for _, durable := range []bool{false, true} {
		t.Run(fmt.Sprint("durable=", durable), func(t *testing.T) {
			b := newBroker(t, func(o *Options) {
				if durable {
					o.DataDir = t.TempDir()
				}
			})
			stressRun(t, b)
		})
	}
}

func assertEventually(f func() bool, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if f() {
			return true
		}
		time.Sleep(20 * time.Millisecond) // polling, as require.Eventually does
	}
	return f()
}

func stressRun(t *testing.T, b *Broker) {
	const pubs, perPub = 3, 1000
	type seen struct {
		mu  sync.Mutex
		got map[string]bool
	}
	subs := map[string]*seen{"sub0": {got: map[string]bool{}}, "sub1": {got: map[string]bool{}}, "group": {got: map[string]bool{}}}
	stop := make(chan struct{})
	var wg, ready sync.WaitGroup
	ready.Add(4)
	// consumer connects as id, reads until it has taken `batch` messages, drops the connection
	// (abruptly every other time) and reconnects, until stop.
	consumer := func(id, filter, into string) {
		defer wg.Done()
		markReady := sync.OnceFunc(ready.Done)
		defer markReady() // never leave the publishers waiting
		s := subs[into]
		for round := 0; ; round++ {
			c, err := tryClient(t, b.Addrs()[0], id, withExpiry(3600), resume())
			if err != nil {
				t.Error(err)
				return
			}
			if _, err := c.Subscribe(ctxT(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: filter, QoS: 2, RetainHandling: 2}}}); err != nil {
				t.Error(err)
				return
			}
			markReady() // subscribed: publishing may start
			for n := 0; n < 40; {
				select {
				case m := <-c.msgs:
					s.mu.Lock()
					s.got[string(m.Payload)] = true
					s.mu.Unlock()
					n++
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
					n = 40
				}
			}
			if round%2 == 0 {
				c.TerminateConnectionForTest()
			} else {
				_ = c.Disconnect(&paho.Disconnect{})
			}
			<-c.Done()
			// What paho already acknowledged was received: take it.
			for drained := false; !drained; {
				select {
				case m := <-c.msgs:
					s.mu.Lock()
					s.got[string(m.Payload)] = true
					s.mu.Unlock()
				default:
					drained = true
				}
			}
		}
	}
	wg.Add(4)
	go consumer("sub0", "s/#", "sub0")
	go consumer("sub1", "s/+", "sub1")
	go consumer("m0", "$share/g/s/#", "group")
	go consumer("m1", "$share/g/s/#", "group")

	ready.Wait()
	var acked sync.Map
	var pwg sync.WaitGroup
	for p := range pubs {
		pc := dialClient(t, b, fmt.Sprint("pub", p))
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			for i := range perPub {
				payload := fmt.Sprintf("p%d-%d", p, i)
				r, err := pc.Publish(ctxT(t), &paho.Publish{Topic: "s/x", QoS: byte(1 + i%2), Payload: []byte(payload)})
				if err != nil || r.ReasonCode >= 0x80 {
					t.Errorf("publish %s: %v", payload, err)
					return
				}
				acked.Store(payload, true)
			}
		}()
	}
	pwg.Wait()
	complete := func() bool {
		ok := true
		acked.Range(func(k, _ any) bool {
			for _, s := range subs {
				s.mu.Lock()
				have := s.got[k.(string)]
				s.mu.Unlock()
				if !have {
					ok = false
					return false
				}
			}
			return true
		})
		return ok
	}
	if !assertEventually(complete, 30*time.Second) {
		n := 0
		acked.Range(func(_, _ any) bool { n++; return true })
		for id, s := range subs {
			s.mu.Lock()
			missing := 0
			acked.Range(func(k, _ any) bool {
				if !s.got[k.(string)] {
					missing++
				}
				return true
			})
			s.mu.Unlock()
			t.Errorf("%s: %d of %d acknowledged messages missing", id, missing, n)
		}
		b.mu.Lock()
		for id, s := range b.sessions {
			t.Logf("session %s conn=%v inflight=%d queued=%d", id, s.conn != nil, len(s.inflight), len(s.queued)-s.qhead)
		}
		for k, g := range b.groups {
			t.Logf("group %q members=%d queue=%d", k, len(g.members), len(g.queue))
		}
		b.mu.Unlock()
	}
	close(stop)
	wg.Wait()
}
