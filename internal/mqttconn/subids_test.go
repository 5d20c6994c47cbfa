package mqttconn

import (
	"bytes"
	"encoding/binary"
	"io"
	"testing"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func varInt(n int) []byte {
	var b []byte
	for {
		c := byte(n % 128)
		n /= 128
		if n > 0 {
			c |= 0x80
		}
		b = append(b, c)
		if n == 0 {
			return b
		}
	}
}

func str(s string) []byte {
	return append(binary.BigEndian.AppendUint16(nil, uint16(len(s))), s...)
}

// publishPacket encodes a PUBLISH whose properties carry ids as separate Subscription Identifier
// properties, among others, as a broker sends for overlapping subscriptions [MQTT-3.3.4-3].
func publishPacket(qos byte, pid uint16, topic string, ids []int, payload []byte) []byte {
	var props []byte
	props = append(props, 0x01, 1)                    // payload format
	props = append(props, 0x02, 0, 0, 0, 60)          // message expiry
	props = append(props, 0x03)                       // content type
	props = append(props, str("application/json")...) //
	props = append(props, 0x26)                       // user property
	props = append(props, append(str("k"), str("v")...)...)
	for _, id := range ids {
		props = append(props, 0x0B)
		props = append(props, varInt(id)...)
	}
	props = append(props, 0x09) // correlation data
	props = append(props, str("\x01\x02")...)
	body := str(topic)
	if qos > 0 {
		body = binary.BigEndian.AppendUint16(body, pid)
	}
	body = append(body, varInt(len(props))...)
	body = append(body, props...)
	body = append(body, payload...)
	return append(append([]byte{0x30 | qos<<1}, varInt(len(body))...), body...)
}

// The tap reads every Subscription Identifier of each PUBLISH, whatever the read boundaries, and
// skips payloads and other packets; paho decodes the same bytes (keeping only the last id).
func TestSubIDTapDecodesEveryIdentifier(t *testing.T) {
	big := bytes.Repeat([]byte("x"), 300)
	stream := bytes.Join([][]byte{
		publishPacket(1, 7, "a/b", []int{5, 268435455, 300}, big),
		{0xD0, 0x00}, // PINGRESP
		publishPacket(0, 0, "c", []int{1}, nil),
		{0x40, 0x02, 0x00, 0x01}, // PUBACK
		publishPacket(0, 0, "d", nil, []byte("p")),
		publishPacket(1, 8, "e", []int{42}, nil),
	}, nil)

	r := bytes.NewReader(stream)
	first, err := packets.ReadPacket(r)
	require.NoError(t, err)
	require.Equal(t, 300, *first.Content.(*packets.Publish).Properties.SubscriptionIdentifier, "paho keeps only the last identifier")

	for _, size := range []int{16, readBufferSize} { // 16: every PUBLISH header is larger than the buffer
		for _, chunk := range []int{1, 2, 3, 7, 64, len(stream)} {
			tap := newSubIDTap()
			r := newTapReader(&chunkReader{b: stream, n: chunk}, size, tap)
			var pubs []*packets.Publish
			for range 6 {
				cp, err := packets.ReadPacket(r) // paho reads the packets through the tap, unchanged
				require.NoError(t, err, "buffer %d, chunk %d", size, chunk)
				if pub, ok := cp.Content.(*packets.Publish); ok {
					pubs = append(pubs, pub)
				}
			}
			_, err := r.Read(make([]byte, 1))
			require.ErrorIs(t, err, io.EOF, "every byte was read")
			require.Len(t, pubs, 4)
			assert.Equal(t, []string{"a/b", "c", "d", "e"}, []string{pubs[0].Topic, pubs[1].Topic, pubs[2].Topic, pubs[3].Topic})
			assert.Equal(t, big, pubs[0].Payload)
			assert.Equal(t, []byte("p"), pubs[2].Payload)

			ids, ok := tap.take(&paho.Publish{QoS: 1, PacketID: 8})
			assert.True(t, ok)
			assert.Equal(t, []int{42}, ids, "chunk %d", chunk)
			ids, ok = tap.take(&paho.Publish{QoS: 1, PacketID: 7})
			assert.True(t, ok)
			assert.Equal(t, []int{5, 268435455, 300}, ids, "chunk %d", chunk)
			ids, ok = tap.take(&paho.Publish{QoS: 0})
			assert.True(t, ok)
			assert.Equal(t, []int{1}, ids, "chunk %d", chunk)
			ids, ok = tap.take(&paho.Publish{QoS: 0})
			assert.True(t, ok)
			assert.Nil(t, ids, "chunk %d", chunk)
			_, ok = tap.take(&paho.Publish{QoS: 0})
			assert.False(t, ok, "nothing more recorded")
			_, ok = tap.take(&paho.Publish{QoS: 1, PacketID: 7})
			assert.False(t, ok, "an entry is taken once")
		}
	}
}

// A PUBLISH that ends before its properties is recorded as not decoded (paho then refuses it).
func TestSubIDTapMalformedPublish(t *testing.T) {
	stream := []byte{0x30, 0x03, 0x00, 0x05, 'a'} // QoS 0, topic length 5 but 1 byte left
	tap := newSubIDTap()
	r := newTapReader(bytes.NewReader(stream), readBufferSize, tap)
	_, err := packets.ReadPacket(r)
	require.Error(t, err)
	_, ok := tap.take(&paho.Publish{QoS: 0})
	assert.False(t, ok)
}

// chunkReader returns at most n bytes per Read, as a connection does when bytes trickle in.
type chunkReader struct {
	b []byte
	n int
}

func (c *chunkReader) Read(p []byte) (int, error) {
	if len(c.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p[:min(len(p), c.n)], c.b)
	c.b = c.b[n:]
	return n, nil
}
