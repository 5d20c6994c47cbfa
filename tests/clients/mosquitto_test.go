package clients

import (
	"fmt"
	"slices"
	"testing"
	"time"
)

// protocols are the versions the command-line clients speak in the matrix.
var protocols = []protocol{v5, v311}

// forEachProtocolAndBroker runs f for every protocol version, against every broker serving it.
func forEachProtocolAndBroker(t *testing.T, f func(t *testing.T, b brokerUnderTest, p protocol)) {
	for _, p := range protocols {
		t.Run(string(p), func(t *testing.T) {
			forEachBroker(t, p, func(t *testing.T, b brokerUnderTest) { f(t, b, p) })
		})
	}
}

// TestMosquittoClientsQoS: messages published at QoS 0, 1 and 2 reach a subscriber in order, at the
// minimum of the publication's QoS and the subscription's (MQTT v5 §3.8.4 and §4.6, MQTT 3.1.1
// §3.8.4 and §4.6).
func TestMosquittoClientsQoS(t *testing.T) {
	forEachProtocolAndBroker(t, func(t *testing.T, b brokerUnderTest, p protocol) {
		const n = 10
		for _, c := range []struct{ sub, pub, want int }{{2, 0, 0}, {2, 1, 1}, {2, 2, 2}, {1, 2, 1}, {0, 2, 0}} {
			topic := fmt.Sprintf("qos/sub%d/pub%d", c.sub, c.pub)
			sub := startSub(t, topic, b, p, "-q", fmt.Sprint(c.sub), "-t", topic, "-C", fmt.Sprint(n), "-W", "30")
			sub.waitSubscribed()
			want := seqPayloads(fmt.Sprintf("q%d", c.pub), n)
			publish(t, b, p, want, "-q", fmt.Sprint(c.pub), "-t", topic)
			got := sub.collect(n)
			if !slices.Equal(payloads(got), want) {
				t.Fatalf("%s: got %q, want %q in order", topic, payloads(got), want)
			}
			for _, m := range got {
				if m.qos != c.want || m.retain || m.topic != topic {
					t.Fatalf("%s: got %+v, want QoS %d (min of publish %d and subscription %d), retain 0", topic, m, c.want, c.pub, c.sub)
				}
			}
			sub.wait()
		}
	})
}

// TestMosquittoClientsRetained: a retained message replaces the previous one and reaches a later
// subscriber with RETAIN 1; a subscriber that was there when it was published gets it with RETAIN
// 0; a zero-length retained message removes it (MQTT v5 §3.3.1.3 [MQTT-3.3.1-5] [MQTT-3.3.1-6] [MQTT-3.3.1-9]
// [MQTT-3.3.1-12]; MQTT 3.1.1 §3.3.1.3 [MQTT-3.3.1-8] [MQTT-3.3.1-9] [MQTT-3.3.1-10]).
func TestMosquittoClientsRetained(t *testing.T) {
	forEachProtocolAndBroker(t, func(t *testing.T, b brokerUnderTest, p protocol) {
		const topic = "retained/config"
		live := startSub(t, "live", b, p, "-q", "1", "-t", topic, "-C", "2", "-W", "30")
		live.waitSubscribed()
		publish(t, b, p, nil, "-q", "1", "-r", "-t", topic, "-m", "config-1")
		publish(t, b, p, nil, "-q", "1", "-r", "-t", topic, "-m", "config-2")
		for _, want := range []string{"config-1", "config-2"} {
			if m := live.next(); m.payload != want || m.retain {
				t.Fatalf("subscriber present at publish time: got %+v, want %q with RETAIN 0", m, want)
			}
		}
		live.wait()

		later := startSub(t, "later", b, p, "-q", "1", "-t", "retained/#", "-C", "1", "-W", "30")
		if m := later.next(); m.payload != "config-2" || !m.retain || m.topic != topic {
			t.Fatalf("new subscriber: got %+v, want the last retained message config-2 with RETAIN 1", m)
		}
		later.wait()

		publish(t, b, p, nil, "-q", "1", "-r", "-t", topic, "-n")
		// --retained-only prints retained messages and exits at the first one that is not: the
		// marker published after the SUBACK ends it, and nothing retained may come before.
		cleared := startSub(t, "cleared", b, p, "-q", "1", "-t", topic, "--retained-only", "-W", "30")
		cleared.waitSubscribed()
		publish(t, b, p, nil, "-q", "1", "-t", topic, "-m", "marker")
		cleared.wait()
		cleared.drained()
	})
}

// TestMosquittoClientsWill: the will of a client whose connection drops without DISCONNECT is
// published; the will of a client that disconnects normally is not (MQTT v5 §3.1.2.5
// [MQTT-3.1.2-8] [MQTT-3.1.2-10]; MQTT 3.1.1 §3.1.2.5 [MQTT-3.1.2-8] [MQTT-3.1.2-10]).
func TestMosquittoClientsWill(t *testing.T) {
	forEachProtocolAndBroker(t, func(t *testing.T, b brokerUnderTest, p protocol) {
		sub := startSub(t, "will-watcher", b, p, "-q", "1", "-t", "will/#", "-C", "2", "-W", "30")
		sub.waitSubscribed()
		polite := startPublisher(t, b, p, "-q", "1", "-t", "data", "-i", "will-polite",
			"--will-topic", "will/polite", "--will-payload", "polite-gone", "--will-qos", "1")
		polite.closeStdin()
		crashed := startPublisher(t, b, p, "-q", "1", "-t", "data", "-i", "will-crashed",
			"--will-topic", "will/crashed", "--will-payload", "crashed-gone", "--will-qos", "1")
		crashed.kill()
		if m := sub.next(); m.topic != "will/crashed" || m.payload != "crashed-gone" || m.qos != 1 {
			t.Fatalf("after a dropped connection: got %+v, want its will crashed-gone on will/crashed at QoS 1", m)
		}
		// The marker comes after: a will wrongly published for the normal disconnect would be
		// received in its place.
		publish(t, b, p, nil, "-q", "1", "-t", "will/marker", "-m", "marker")
		if m := sub.next(); m.payload != "marker" {
			t.Fatalf("got %+v, want the marker (no will after a normal DISCONNECT)", m)
		}
		sub.wait()
	})
}

// TestMosquittoClientsPersistentSession: a subscriber with a persistent session (-c, a fixed
// client id) gets, on reconnecting, every QoS 1 and QoS 2 message published while it was away, in
// order, including across a broker restart (mqbroker: SIGKILL; Mosquitto: SIGTERM, see Restart);
// QoS 2 exactly once, QoS 1 at least once (a repeat is logged) (MQTT v5 §3.1.2.4, §4.1 and §4.3
// [MQTT-3.1.2-5]; MQTT 3.1.1 §3.1.2.4, §4.1 and §4.3 [MQTT-3.1.2-4]).
func TestMosquittoClientsPersistentSession(t *testing.T) {
	forEachProtocolAndBroker(t, func(t *testing.T, b brokerUnderTest, p protocol) {
		const n = 10
		for _, qos := range []int{1, 2} {
			q := fmt.Sprint(qos)
			id, topic := "persistent-q"+q, "persistent/q"+q
			session := func(args ...string) []string {
				return append([]string{"-c", "-i", id, "-q", q, "-t", topic}, args...)
			}
			// -E: exit (DISCONNECT, the session stays) once the SUBACK came.
			first := startSub(t, "first", b, p, session("-E")...)
			first.wait()

			// Each batch ends with a marker: the subscriber reads up to it (one topic keeps its
			// order [MQTT-4.6.0-5]), then its connection drops (see drop).
			offline := seqPayloads("offline-q"+q, n)
			publish(t, b, p, append(offline, "end-offline"), "-q", q, "-t", topic)
			back := startSub(t, "reconnected", b, p, session()...)
			checkBatch(t, qos, "after a reconnect", back.readUntil("end-offline"), offline, nil)
			back.drop()

			queued := seqPayloads("restart-q"+q, n)
			publish(t, b, p, append(queued, "end-restart"), "-q", q, "-t", topic)
			b.Restart(t)
			afterRestart := startSub(t, "after-restart", b, p, session()...)
			checkBatch(t, qos, "after a broker restart", afterRestart.readUntil("end-restart"), queued, append(offline, "end-offline"))
			afterRestart.drop()

			// Then only the new message: a repeat of an earlier one (at QoS 1: a PUBACK that
			// mosquitto_sub had queued when it was killed) is logged by checkBatch.
			publish(t, b, p, nil, "-q", q, "-t", topic, "-m", "last")
			final := startSub(t, "final", b, p, session()...)
			earlier := slices.Concat(offline, []string{"end-offline"}, queued, []string{"end-restart"})
			checkBatch(t, qos, "on the next reconnect", final.readUntil("last"), nil, earlier)
			final.drop()
		}
	})
}

// checkBatch checks the messages a persistent session received for one batch (its marker
// excluded): want, in order, each once at QoS 2; at QoS 1 a message may come again (at least
// once), and so may one of an earlier batch (before): repeats are logged, not failed.
func checkBatch(t *testing.T, qos int, when string, got []message, want, before []string) {
	t.Helper()
	var firsts, repeats []string
	seen := map[string]bool{}
	for _, m := range got {
		if m.qos != qos {
			t.Fatalf("QoS %d %s: %+v arrived at QoS %d", qos, when, m, m.qos)
		}
		if seen[m.payload] || slices.Contains(before, m.payload) {
			repeats = append(repeats, m.payload)
			continue
		}
		seen[m.payload] = true
		firsts = append(firsts, m.payload)
	}
	if !slices.Equal(firsts, want) {
		t.Fatalf("QoS %d %s: got %q, want %q in order (nothing lost)", qos, when, firsts, want)
	}
	if len(repeats) > 0 {
		if qos == 2 {
			t.Fatalf("QoS 2 %s: delivered again %q (QoS 2 is exactly once)", when, repeats)
		}
		t.Logf("%s: QoS 1 %s: %d repeated deliveries of acknowledged messages (allowed at QoS 1): %q", t.Name(), when, len(repeats), repeats)
	}
}

// TestMosquittoClientsSharedSubscription: two subscribers of $share/g/<topic> split the messages:
// each message reaches exactly one of them, and both get some (MQTT v5 §4.8.2; 3.1.1 subscribers
// use the same filter syntax, as Mosquitto and the Azure IoT Operations broker allow).
func TestMosquittoClientsSharedSubscription(t *testing.T) {
	forEachProtocolAndBroker(t, func(t *testing.T, b brokerUnderTest, p protocol) {
		const n, topic = 40, "shared/readings"
		a := startSub(t, "member-a", b, p, "-q", "1", "-i", "member-a", "-t", "$share/g/"+topic)
		c := startSub(t, "member-b", b, p, "-q", "1", "-i", "member-b", "-t", "$share/g/"+topic)
		a.waitSubscribed()
		c.waitSubscribed()
		want := seqPayloads("shared", n)
		publish(t, b, p, want, "-q", "1", "-t", topic)
		seen := map[string]string{}
		count := map[string]int{}
		deadline := time.After(clientTimeout)
		for len(seen) < n {
			var m message
			var who string
			select {
			case m = <-a.msgs:
				who = "member-a"
			case m = <-c.msgs:
				who = "member-b"
			case <-deadline:
				t.Fatalf("%d of %d messages within %s: %v", len(seen), n, clientTimeout, count)
			}
			if prev, dup := seen[m.payload]; dup {
				t.Fatalf("%s reached both %s and %s: a shared subscription delivers each message to one member", m.payload, prev, who)
			}
			seen[m.payload] = who
			count[who]++
		}
		for _, w := range want {
			if _, ok := seen[w]; !ok {
				t.Fatalf("%s never arrived", w)
			}
		}
		if count["member-a"] == 0 || count["member-b"] == 0 {
			t.Fatalf("the load was not split: %v", count)
		}
		t.Logf("%s: split: %v", t.Name(), count)
	})
}
