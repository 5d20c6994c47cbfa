package broker

import (
	"encoding/binary"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	mqtt "github.com/eclipse/paho.mqtt.golang"
)

// runQoS1V3 is runQoS1's load with MQTT 3.1.1 clients (paho.mqtt.golang): n 64-byte QoS 1 messages
// from 4 publishers (16 publishes in flight each) to one clean-session-0 QoS 1 subscriber.
func runQoS1V3(b *testing.B, addr string, n int) benchResult {
	const pubs, window = 4, 16
	n -= n % (pubs * window)
	lat := make([]time.Duration, 0, n)
	var mu sync.Mutex
	got := make(chan struct{})
	o := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID("bench3-sub").SetProtocolVersion(4).
		SetCleanSession(false).SetAutoReconnect(false).SetOrderMatters(false)
	sub := mqtt.NewClient(o)
	if tok := sub.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		b.Fatalf("subscriber connect: %v", tok.Error())
	}
	defer sub.Disconnect(100)
	tok := sub.Subscribe("bench/#", 1, func(_ mqtt.Client, m mqtt.Message) {
		d := time.Duration(time.Now().UnixNano() - int64(binary.BigEndian.Uint64(m.Payload())))
		mu.Lock()
		lat = append(lat, d)
		if len(lat) == n {
			close(got)
		}
		mu.Unlock()
	})
	if !tok.WaitTimeout(waitFor) || tok.Error() != nil {
		b.Fatalf("subscribe: %v", tok.Error())
	}
	start := time.Now()
	var wg sync.WaitGroup
	for p := range pubs {
		pc := mqtt.NewClient(mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(fmt.Sprint("bench3-pub", p)).
			SetProtocolVersion(4).SetCleanSession(true).SetAutoReconnect(false))
		if tok := pc.Connect(); !tok.WaitTimeout(waitFor) || tok.Error() != nil {
			b.Fatalf("publisher connect: %v", tok.Error())
		}
		defer pc.Disconnect(100)
		per := n / (pubs * window)
		for range window {
			wg.Add(1)
			go func() {
				defer wg.Done()
				payload := make([]byte, 64)
				for range per {
					binary.BigEndian.PutUint64(payload, uint64(time.Now().UnixNano()))
					tok := pc.Publish("bench/t", 1, false, slices.Clone(payload))
					if !tok.WaitTimeout(time.Minute) || tok.Error() != nil {
						b.Errorf("publish: %v", tok.Error())
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	select {
	case <-got:
	case <-time.After(2 * time.Minute):
		mu.Lock()
		b.Fatalf("%d of %d messages received", len(lat), n)
	}
	elapsed := time.Since(start)
	mu.Lock()
	defer mu.Unlock()
	slices.Sort(lat)
	return benchResult{rate: float64(n) / elapsed.Seconds(), p50: lat[len(lat)/2], p99: lat[len(lat)*99/100]}
}

// BenchmarkV3QoS1VsMosquitto runs the QoS 1 load with 3.1.1 clients (paho.mqtt.golang) against
// mqbroker in memory and Mosquitto, alternating which goes first, and reports msg/s of each and
// their ratio. Run with:
//
//	go test -run '^$' -bench V3QoS1VsMosquitto -benchtime 3x ./broker/
func BenchmarkV3QoS1VsMosquitto(b *testing.B) {
	const n = 20000
	var mosq, mem []float64
	for i := range b.N {
		runMosq := func() { mosq = append(mosq, runQoS1V3(b, startMosquitto(b), n).rate) }
		runMem := func() {
			mem = append(mem, runQoS1V3(b, newBroker(b, func(o *Options) { o.ReceiveMaximum = 1000 }).Addrs()[0], n).rate)
		}
		if i%2 == 0 {
			runMosq()
			runMem()
		} else {
			runMem()
			runMosq()
		}
	}
	mean := func(v []float64) float64 {
		s := 0.0
		for _, x := range v {
			s += x
		}
		return s / float64(len(v))
	}
	b.ReportMetric(mean(mosq), "mosquitto-v3-msg/s")
	b.ReportMetric(mean(mem), "memory-v3-msg/s")
	b.ReportMetric(mean(mem)/mean(mosq), "memory/mosquitto-v3")
	b.Logf("3.1.1 clients: mosquitto %.0f msg/s (min %.0f max %.0f), mqbroker memory %.0f msg/s (min %.0f max %.0f), %d rounds",
		mean(mosq), slices.Min(mosq), slices.Max(mosq), mean(mem), slices.Min(mem), slices.Max(mem), len(mem))
}
