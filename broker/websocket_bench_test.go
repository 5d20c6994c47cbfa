package broker

import (
	"bufio"
	"net"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// benchConn is the benchmark clients' connection, the same over TCP and WebSocket so that only the
// transport differs: each packet paho writes is one Write (one WebSocket message, as browser
// clients send), since paho locks a sync.Locker connection around the writes of one packet, gathered
// here until Unlock; reads are buffered (paho reads a packet's header byte by byte).
type benchConn struct {
	net.Conn
	br  *bufio.Reader
	mu  sync.Mutex
	buf []byte
}

func newBenchConn(nc net.Conn) *benchConn { return &benchConn{Conn: nc, br: bufio.NewReader(nc)} }

func (c *benchConn) Read(p []byte) (int, error) { return c.br.Read(p) }

func (c *benchConn) Lock() { c.mu.Lock() }

func (c *benchConn) Unlock() {
	if len(c.buf) > 0 {
		_, _ = c.Conn.Write(c.buf) // a failed connection shows on the reading side
		c.buf = c.buf[:0]
	}
	c.mu.Unlock()
}

// Write is only called by paho with the lock held.
func (c *benchConn) Write(p []byte) (int, error) {
	c.buf = append(c.buf, p...)
	return len(p), nil
}

// BenchmarkWebSocketVsTCP runs the same QoS 1 load as BenchmarkQoS1VsMosquitto (4 publishers, 16
// publishes in flight each, one persistent QoS 1 subscriber, 64-byte payloads, 20000 messages a
// round, the broker in memory) over TCP and over WebSocket, with the same client connection
// (benchConn: one write per packet, buffered reads) on both, a fresh broker
// per round and the order alternating, and reports msg/s, p50/p99 latency of each and the
// WebSocket/TCP ratios, and the CPU time of the test process (broker and clients) per message, less
// sensitive to a busy machine than the rates. Run with:
//
//	go test -run '^$' -bench WebSocketVsTCP -benchtime 4x ./broker/
func BenchmarkWebSocketVsTCP(b *testing.B) {
	const n = 20000
	var tcpTime, wsTime, tcpCPU, wsCPU time.Duration
	var tcpP50, wsP50, tcpP99, wsP99 []time.Duration
	for i := range b.N {
		run := func(ws bool) {
			br := newWSBroker(b, func(o *Options) { o.ReceiveMaximum = 1000 })
			var r benchResult
			cpu := processCPU(b)
			defer func() {
				if ws {
					wsCPU += processCPU(b) - cpu
				} else {
					tcpCPU += processCPU(b) - cpu
				}
			}()
			if ws {
				u := wsURL(b, br)
				r = runQoS1Dial(b, func(id string, opts ...clientOpt) (*client, error) {
					conn, resp, err := (&websocket.Dialer{Subprotocols: []string{"mqtt"}}).Dial(u, nil)
					if err != nil {
						return nil, err
					}
					resp.Body.Close()
					return clientOn(b, newBenchConn(newWSConn(conn)), id, opts...)
				}, n)
				wsTime += time.Duration(float64(n) / r.rate * float64(time.Second))
				wsP50, wsP99 = append(wsP50, r.p50), append(wsP99, r.p99)
			} else {
				addr := br.Addrs()[0]
				r = runQoS1Dial(b, func(id string, opts ...clientOpt) (*client, error) {
					nc, err := net.Dial("tcp", addr)
					if err != nil {
						return nil, err
					}
					return clientOn(b, newBenchConn(nc), id, opts...)
				}, n)
				tcpTime += time.Duration(float64(n) / r.rate * float64(time.Second))
				tcpP50, tcpP99 = append(tcpP50, r.p50), append(tcpP99, r.p99)
			}
			b.Logf("round %d ws=%v: %.0f msg/s p50 %v p99 %v", i, ws, r.rate, r.p50, r.p99)
		}
		run(i%2 == 1)
		run(i%2 == 0)
	}
	msgs := float64(b.N * n)
	tcp, ws := msgs/tcpTime.Seconds(), msgs/wsTime.Seconds()
	b.ReportMetric(tcp, "tcp-msg/s")
	b.ReportMetric(ws, "ws-msg/s")
	b.ReportMetric(ws/tcp, "ws/tcp-throughput")
	b.ReportMetric(float64(tcpCPU.Microseconds())/msgs, "tcp-cpu-µs/msg")
	b.ReportMetric(float64(wsCPU.Microseconds())/msgs, "ws-cpu-µs/msg")
	b.ReportMetric(float64(wsCPU)/float64(tcpCPU), "ws/tcp-cpu")
	b.ReportMetric(float64(median(wsP50))/float64(median(tcpP50)), "ws/tcp-p50-latency")
	b.ReportMetric(float64(median(wsP99))/float64(median(tcpP99)), "ws/tcp-p99-latency")
}

func median(ds []time.Duration) time.Duration {
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2]
}
