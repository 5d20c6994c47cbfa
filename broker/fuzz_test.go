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

func packetBytes(cps ...interface {
	WriteTo(io.Writer) (int64, error)
}) []byte {
	var buf bytes.Buffer
	for _, cp := range cps {
		_, _ = cp.WriteTo(&buf)
	}
	return buf.Bytes()
}

// FuzzReadPacket checks that the frame reader never panics and never accepts more than the limit.
func FuzzReadPacket(f *testing.F) {
	f.Add([]byte{0x30, 0x05, 0x00, 0x01, 'a', 0x00, 'x'})
	f.Add([]byte{0x30, 0xff, 0xff, 0xff, 0x7f})
	f.Add(packetBytes(&packets.Publish{Topic: "a/b", QoS: 1, PacketID: 1, Payload: []byte("p"), Properties: &packets.Properties{}}))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := bufio.NewReader(bytes.NewReader(data))
		for {
			cp, err := readPacket(r, 256)
			if err != nil {
				return
			}
			if cp.Content == nil {
				t.Fatal("nil content without error")
			}
		}
	})
}

// FuzzConnection feeds a CONNECT followed by arbitrary bytes to a live broker connection: the broker
// must not panic, must close the connection, and must keep serving.
func FuzzConnection(f *testing.F) {
	connect := packets.NewControlPacket(packets.CONNECT)
	connect.Content.(*packets.Connect).ClientID = "fuzz"
	connect.Content.(*packets.Connect).CleanStart = true
	sub := packets.NewControlPacket(packets.SUBSCRIBE)
	sub.Content.(*packets.Subscribe).PacketID = 1
	sub.Content.(*packets.Subscribe).Subscriptions = []packets.SubOptions{{Topic: "#", QoS: 2}, {Topic: "$share/g/a", QoS: 1}}
	f.Add(packetBytes(sub, &packets.Publish{Topic: "a", QoS: 2, PacketID: 3, Retain: true, Payload: []byte("x"), Properties: &packets.Properties{}}))
	f.Add(packetBytes(&packets.Publish{Topic: "a", QoS: 1, PacketID: 3, Payload: []byte("x"), Properties: &packets.Properties{}}, packets.NewControlPacket(packets.PINGREQ)))
	f.Add([]byte{0xe0, 0x00})
	f.Add([]byte{0xf0, 0x02, 0x19, 0x00})
	one, two := uint16(1), uint16(2)
	f.Add(packetBytes( // topic aliases: defined, used alone, used before defined
		&packets.Publish{Topic: "a/b", QoS: 1, PacketID: 4, Payload: []byte("x"), Properties: &packets.Properties{TopicAlias: &one}},
		&packets.Publish{QoS: 1, PacketID: 5, Payload: []byte("y"), Properties: &packets.Properties{TopicAlias: &one}},
		&packets.Publish{QoS: 0, Payload: []byte("z"), Properties: &packets.Properties{TopicAlias: &two}}))

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
	prefix := packetBytes(connect)
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
