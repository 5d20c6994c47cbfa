package broker

import (
	"bufio"
	"bytes"
	"io"
	"log/slog"
	"net"
	"testing"

	"github.com/eclipse/paho.golang/packets"
)

// FuzzReadPacketV3 checks that the 3.1.1 decoder (frame reader plus mochi's body codec) never
// panics, never accepts more than the limit, and that what it accepts encodes back as 3.1.1.
func FuzzReadPacketV3(f *testing.F) {
	f.Add(v3Conn{id: "a", flags: 0xc6, will: [2]string{"w", "x"}, user: "u", pw: "p"}.bytes())
	f.Add(v3Publish("a/b", 1, 1, "p", false))
	f.Add(v3Subscribe(1, "a/#", 2, "$share/g/x", 1))
	f.Add(frame(0xa2, u16(1), str("a")))
	f.Add(frame(0x62, u16(9)))
	f.Add([]byte{0xc0, 0x00, 0xe0, 0x00})
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		var buf bytes.Buffer
		for {
			first, body, err := readFrame(r, 256)
			if err != nil {
				return
			}
			if len(body) > 256 {
				t.Fatalf("body of %d bytes accepted, limit 256", len(body))
			}
			cp, err := decodeV3(first, body)
			if err != nil {
				continue
			}
			if cp.Content == nil {
				t.Fatal("nil content without error")
			}
			// Every packet a client sends is one the broker can also write (as a server it writes
			// none of CONNECT, SUBSCRIBE, UNSUBSCRIBE, PINGREQ, DISCONNECT: those are skipped).
			if p, ok := cp.Content.(*packets.Publish); ok && p.QoS > 0 && p.PacketID == 0 {
				continue // refused by the handler [MQTT-2.3.1-1]
			}
			switch first >> 4 {
			case 3, 4, 5, 6, 7:
				w := bufio.NewWriter(io.Discard)
				if err := writeV3(w, &buf, cp); err != nil {
					t.Fatalf("decoded packet does not encode: %v", err)
				}
			}
		}
	})
}

// FuzzConnectionV3 feeds a 3.1.1 CONNECT followed by arbitrary bytes to a live broker connection:
// the broker must not panic, must close the connection, and must keep serving.
func FuzzConnectionV3(f *testing.F) {
	f.Add(append(v3Subscribe(1, "#", 2, "$share/g/a", 1), v3Publish("a", 2, 3, "x", true)...))
	f.Add(append(v3Publish("a", 1, 3, "x", false), 0xc0, 0x00))
	f.Add([]byte{0xe0, 0x00})
	f.Add(frame(0x62, u16(3)))
	f.Add(v3Conn{id: "again", flags: 0x02}.bytes())

	o := NewDefaultOptions()
	o.Addr = ""
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	o.MaxPacketSize = 4096
	b, err := New(o)
	if err != nil {
		f.Fatal(err)
	}
	if err := b.Start(); err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { _ = b.Close() })
	prefix := v3Conn{id: "fuzz3", flags: 0x02 | 0x04 | 0x08, keepAlive: 30, will: [2]string{"w", "gone"}}.bytes()
	f.Fuzz(func(t *testing.T, data []byte) {
		client, server := net.Pipe()
		if !b.startConn(server) {
			t.Fatal("broker closed")
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_, _ = io.Copy(io.Discard, client)
		}()
		_, _ = client.Write(append(append([]byte(nil), prefix...), data...))
		client.Close()
		<-done
	})
}
