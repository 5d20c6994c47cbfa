package broker

import (
	"bufio"
	"bytes"
	"fmt"
	"io"

	"github.com/eclipse/paho.golang/packets"
)

// readPacket reads one MQTT v5 control packet. The declared size is checked against max before any
// body allocation [MQTT-3.2.2-15]; paho's codec only decodes the bytes already read. Errors wrap
// ErrPacketTooLarge, ErrMalformed or the reader's error.
func readPacket(r *bufio.Reader, max uint32) (*packets.ControlPacket, error) {
	first, err := r.ReadByte()
	if err != nil {
		return nil, err
	}
	var length uint32
	var shift uint
	hdr := 1
	for i := 0; ; i++ {
		if i == 4 {
			return nil, fmt.Errorf("%w: remaining length longer than 4 bytes", ErrMalformed) // [MQTT-1.5.5-1]
		}
		b, err := r.ReadByte()
		if err != nil {
			return nil, err
		}
		hdr++
		length |= uint32(b&0x7f) << shift
		shift += 7
		if b&0x80 == 0 {
			break
		}
	}
	if uint64(length)+uint64(hdr) > uint64(max) {
		return nil, fmt.Errorf("%w: %d bytes declared, limit %d", ErrPacketTooLarge, uint64(length)+uint64(hdr), max)
	}
	cp, err := newPacket(first)
	if err != nil {
		return nil, err
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(r, body); err != nil {
		return nil, err
	}
	if err := unpack(cp, body); err != nil {
		return nil, err
	}
	return cp, nil
}

// newPacket checks the fixed header flags [MQTT-2.1.3-1] and prepares the content.
func newPacket(first byte) (*packets.ControlPacket, error) {
	typ, flags := first>>4, first&0x0f
	cp := packets.NewControlPacket(typ)
	if cp == nil || typ == packets.CONNACK || typ == packets.SUBACK || typ == packets.UNSUBACK || typ == packets.PINGRESP {
		return nil, fmt.Errorf("%w: packet type %d not accepted from a client", ErrMalformed, typ)
	}
	switch typ {
	case packets.PUBLISH:
		p := cp.Content.(*packets.Publish)
		p.QoS = (flags >> 1) & 3
		if p.QoS == 3 {
			return nil, fmt.Errorf("%w: PUBLISH with QoS 3", ErrMalformed) // [MQTT-3.3.1-4]
		}
		p.Duplicate = flags&8 != 0
		p.Retain = flags&1 != 0
		if p.QoS == 0 && p.Duplicate {
			return nil, fmt.Errorf("%w: DUP set on QoS 0", ErrMalformed) // [MQTT-3.3.1-2]
		}
	case packets.PUBREL, packets.SUBSCRIBE, packets.UNSUBSCRIBE:
		if flags != 2 {
			return nil, fmt.Errorf("%w: reserved flags %x", ErrMalformed, flags)
		}
	default:
		if flags != 0 {
			return nil, fmt.Errorf("%w: reserved flags %x", ErrMalformed, flags)
		}
	}
	cp.Flags = flags
	return cp, nil
}

// unpack decodes the body with paho's codec, turning any panic into ErrMalformed.
func unpack(cp *packets.ControlPacket, body []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v", ErrMalformed, r)
		}
	}()
	if d, ok := cp.Content.(*packets.Disconnect); ok && len(body) == 0 {
		// Remaining Length 0: reason 0x00, no properties (MQTT v5 §3.14.2.1); paho's codec
		// would read a reason code that is not there.
		d.ReasonCode = 0
		return nil
	}
	if err := cp.Content.Unpack(bytes.NewBuffer(body)); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	return nil
}
