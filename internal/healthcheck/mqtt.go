package healthcheck

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// MQTT probes an MQTT v5 broker at addr (host:port, plain TCP): it connects, sends CONNECT (clean
// start, no session kept, an empty client id for the broker to assign), reads the CONNACK and
// disconnects normally; the packets are paho.golang's, as everywhere in the project. Healthy when the CONNACK accepts the connection, or refuses it only for
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

	cp := packets.NewControlPacket(packets.CONNECT)
	cp.Content.(*packets.Connect).CleanStart = true // no session kept; "" lets the broker assign an id
	if _, err := cp.WriteTo(c); err != nil {
		return "", fmt.Errorf("%s: sending CONNECT: %w", addr, err)
	}
	r := bufio.NewReader(c)
	first, err := r.Peek(1)
	if err != nil {
		return "", fmt.Errorf("%s: no CONNACK: %w", addr, err)
	}
	if first[0]>>4 != packets.CONNACK { // another protocol on the port: its greeting is no packet
		return "", fmt.Errorf("%s: answered packet type %d, not CONNACK", addr, first[0]>>4)
	}
	ack, err := packets.ReadPacket(r)
	if err != nil {
		return "", fmt.Errorf("%s: no CONNACK: %w", addr, err)
	}
	ca, ok := ack.Content.(*packets.Connack)
	if !ok {
		return "", fmt.Errorf("%s: answered %s, not CONNACK", addr, ack.PacketType())
	}
	switch code := ca.ReasonCode; code {
	case 0x00:
		_, _ = packets.NewControlPacket(packets.DISCONNECT).WriteTo(c) // normal disconnection
		return addr + " accepted an MQTT v5 connection", nil
	case 0x86, 0x87, 0x8C:
		return fmt.Sprintf("%s answers MQTT v5 (CONNACK 0x%02X: the probe has no credentials)", addr, code), nil
	default:
		return "", fmt.Errorf("%s refused the connection: CONNACK reason 0x%02X", addr, code)
	}
}
