package healthcheck

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"
)

// MQTT probes an MQTT v5 broker at addr (host:port, plain TCP): it connects, sends CONNECT (clean
// start, no session kept, an empty client id for the broker to assign), reads the CONNACK and
// disconnects normally. Healthy when the CONNACK accepts the connection, or refuses it only for
// its credentials (0x86, 0x87, 0x8C: the broker is serving and enforcing authentication); any
// other reason code, a packet that is not a CONNACK, or no answer within ctx is unhealthy.
func MQTT(ctx context.Context, addr string) (string, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return "", err
	}
	defer c.Close()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	// Closing on ctx's end too, in case it is cancelled rather than timed out.
	stop := context.AfterFunc(ctx, func() { _ = c.SetDeadline(time.Now()) })
	defer stop()

	if _, err := c.Write(connectPacket); err != nil {
		return "", fmt.Errorf("%s: sending CONNECT: %w", addr, err)
	}
	code, err := readConnack(bufio.NewReader(c))
	if err != nil {
		return "", fmt.Errorf("%s: %w", addr, err)
	}
	switch code {
	case 0x00:
		// DISCONNECT with remaining length 0: reason 0x00, normal disconnection [MQTT-3.14.2-1].
		_, _ = c.Write([]byte{0xE0, 0x00})
		return addr + " accepted an MQTT v5 connection", nil
	case 0x86, 0x87, 0x8C:
		return fmt.Sprintf("%s answers MQTT v5 (CONNACK 0x%02X: the probe has no credentials)", addr, code), nil
	}
	return "", fmt.Errorf("%s refused the connection: CONNACK reason 0x%02X", addr, code)
}

// connectPacket is an MQTT v5 CONNECT (§3.1): protocol name "MQTT", level 5, flags clean start,
// keep alive 0, no properties (session expiry 0: nothing is kept), zero-length client id, which
// the broker replaces with one it assigns [MQTT-3.1.3-6].
var connectPacket = []byte{
	0x10, 13, // CONNECT, remaining length
	0x00, 0x04, 'M', 'Q', 'T', 'T', // protocol name
	0x05,       // protocol level
	0x02,       // connect flags: clean start
	0x00, 0x00, // keep alive
	0x00,       // properties length
	0x00, 0x00, // client identifier ""
}

// readConnack reads one packet and returns its CONNACK reason code (§3.2.2.2).
func readConnack(r *bufio.Reader) (byte, error) {
	first, err := r.ReadByte()
	if err != nil {
		return 0, fmt.Errorf("no CONNACK: %w", err)
	}
	n, err := readVarint(r)
	if err != nil {
		return 0, fmt.Errorf("reading CONNACK: %w", err)
	}
	if first != 0x20 {
		return 0, fmt.Errorf("answered packet type %d, not CONNACK", first>>4)
	}
	if n < 2 || n > 1<<16 {
		return 0, fmt.Errorf("CONNACK remaining length %d", n)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, fmt.Errorf("reading CONNACK: %w", err)
	}
	return body[1], nil
}

var errVarint = errors.New("malformed variable byte integer")

// readVarint reads an MQTT variable byte integer (§1.5.5), at most 4 bytes.
func readVarint(r io.ByteReader) (int, error) {
	v, shift := 0, 0
	for i := 0; i < 4; i++ {
		b, err := r.ReadByte()
		if err != nil {
			return 0, err
		}
		v |= int(b&0x7F) << shift
		if b&0x80 == 0 {
			return v, nil
		}
		shift += 7
	}
	return 0, errVarint
}
