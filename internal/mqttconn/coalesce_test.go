package mqttconn

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/packets"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

// Packets that many goroutines send at once through the untapped connection (a coalescingConn) all
// arrive whole, each once, over plain TCP and over TLS. Over TLS the connection used to be the bare
// tls.Conn: paho's net.Buffers then went out as one TLS record per buffer, and concurrent senders'
// records interleaved (this test saw malformed packets before the coalescingConn).
func TestConcurrentPacketsArriveWhole(t *testing.T) {
	for _, scheme := range []string{"mqtt", "mqtts"} {
		t.Run(scheme, func(t *testing.T) { concurrentPacketsArriveWhole(t, scheme) })
	}
}

func concurrentPacketsArriveWhole(t *testing.T, scheme string) {
	const senders, perSender = 16, 200
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { _ = ln.Close() })
	cfg := autopaho.ClientConfig{ConnectTimeout: 5 * time.Second}
	if scheme == "mqtts" {
		files := testutil.GenerateTLS(t, "coalesce")
		cert, err := tls.LoadX509KeyPair(files.Cert, files.Key)
		require.NoError(t, err)
		ln = tls.NewListener(ln, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
		pool := x509.NewCertPool()
		require.True(t, pool.AppendCertsFromPEM(files.CAPEM))
		cfg.TlsCfg = &tls.Config{RootCAs: pool, ServerName: "127.0.0.1", MinVersion: tls.VersionTLS12}
	}
	got := make(chan map[string]int, 1)
	errs := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			errs <- err
			return
		}
		defer func() { _ = c.Close() }()
		seen := map[string]int{}
		for range senders * perSender {
			p, err := packets.ReadPacket(c)
			if err != nil {
				errs <- fmt.Errorf("after %d packets: %w", len(seen), err)
				return
			}
			pub, ok := p.Content.(*packets.Publish)
			if !ok || string(pub.Payload) != "payload-of-"+pub.Topic {
				errs <- fmt.Errorf("malformed packet %T %+v", p.Content, p.Content)
				return
			}
			seen[pub.Topic]++
		}
		got <- seen
	}()

	u, err := url.Parse(scheme + "://" + ln.Addr().String())
	require.NoError(t, err)
	conn, err := dial(t.Context(), cfg, u, nil)
	require.NoError(t, err)
	t.Cleanup(func() { _ = conn.Close() })
	var wg sync.WaitGroup
	for s := range senders {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range perSender {
				topic := "t/" + strconv.Itoa(s) + "/" + strconv.Itoa(i)
				pub := &packets.Publish{Topic: topic, QoS: 1, PacketID: uint16(s*perSender + i + 1), Payload: []byte("payload-of-" + topic),
					Properties: &packets.Properties{CorrelationData: []byte(topic), User: []packets.User{{Key: "k", Value: topic}}}}
				if _, err := pub.WriteTo(conn); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	select {
	case seen := <-got:
		require.Len(t, seen, senders*perSender)
		for topic, n := range seen {
			require.Equal(t, 1, n, topic)
		}
	case err := <-errs:
		t.Fatal(err)
	case <-time.After(30 * time.Second):
		t.Fatal("the packets did not arrive")
	}
}

// A write error closes the connection (paho's reader sees it) and fails every later packet; no
// packet waits for ever.
func TestCoalescingConnWriteErrorClosesAndFails(t *testing.T) {
	a, b := net.Pipe()
	c := newCoalescingConn(a)
	_ = b.Close() // writes to a now fail
	pub := &packets.Publish{Topic: "t", Payload: []byte("x")}
	_, _ = pub.WriteTo(c) // the error comes from Unlock's write: the packet is dropped
	_, err := pub.WriteTo(c)
	require.ErrorIs(t, err, io.ErrClosedPipe) // later packets fail at once, with the first error
	_, err = a.Read(make([]byte, 1))
	require.Error(t, err, "the connection is closed")
}

// countingConn records every write that reaches the network connection.
type countingConn struct {
	net.Conn
	mu     sync.Mutex
	writes [][]byte
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.writes = append(c.writes, append([]byte(nil), p...))
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *countingConn) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.writes)
}

// With deferAcks, a PUBACK waits for the next packet and goes out with it in one write; a PUBACK
// that no packet follows goes out by itself once deferAcks passed, and Close writes what is held.
func TestCoalescingConnDefersAcks(t *testing.T) {
	pipe := func(t *testing.T, d time.Duration) (*coalescingConn, *countingConn, chan *packets.ControlPacket) {
		a, b := net.Pipe()
		t.Cleanup(func() { _ = a.Close(); _ = b.Close() })
		cc := &countingConn{Conn: a}
		c := newCoalescingConn(cc)
		c.deferAcks = d
		got := make(chan *packets.ControlPacket, 10)
		go func() {
			for {
				p, err := packets.ReadPacket(b)
				if err != nil {
					close(got)
					return
				}
				got <- p
			}
		}()
		return c, cc, got
	}
	next := func(t *testing.T, got chan *packets.ControlPacket) *packets.ControlPacket {
		t.Helper()
		select {
		case p := <-got:
			require.NotNil(t, p, "connection closed")
			return p
		case <-time.After(10 * time.Second):
			t.Fatal("no packet")
			return nil
		}
	}

	t.Run("with the next packet", func(t *testing.T) {
		c, cc, got := pipe(t, time.Hour)
		_, err := (&packets.Puback{PacketID: 7, Properties: &packets.Properties{}}).WriteTo(c)
		require.NoError(t, err)
		require.Zero(t, cc.count(), "the PUBACK waits")
		_, err = (&packets.Publish{Topic: "req", QoS: 1, PacketID: 8, Payload: []byte("x"), Properties: &packets.Properties{}}).WriteTo(c)
		require.NoError(t, err)
		require.Equal(t, 1, cc.count(), "one write for both")
		require.Equal(t, uint16(7), next(t, got).Content.(*packets.Puback).PacketID)
		require.Equal(t, "req", next(t, got).Content.(*packets.Publish).Topic)
	})
	t.Run("alone after the delay", func(t *testing.T) {
		c, _, got := pipe(t, 5*time.Millisecond)
		_, err := (&packets.Puback{PacketID: 9, Properties: &packets.Properties{}}).WriteTo(c)
		require.NoError(t, err)
		require.Equal(t, uint16(9), next(t, got).Content.(*packets.Puback).PacketID)
	})
	t.Run("on close", func(t *testing.T) {
		c, cc, got := pipe(t, time.Hour)
		_, err := (&packets.Puback{PacketID: 10, Properties: &packets.Properties{}}).WriteTo(c)
		require.NoError(t, err)
		done := make(chan error, 1)
		go func() { done <- c.Close() }()
		require.Equal(t, uint16(10), next(t, got).Content.(*packets.Puback).PacketID)
		require.NoError(t, <-done)
		require.Equal(t, 1, cc.count())
	})
}
