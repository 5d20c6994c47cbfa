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
	first, body, err := readFrame(r, max)
	if err != nil {
		return nil, err
	}
	return decodeV5(first, body)
}

// readFrame reads one frame, the fixed header's first byte and the body, for either protocol
// version (the fixed header is the same in 3.1.1 and v5). The declared size is checked against max
// before the body is allocated.
func readFrame(r *bufio.Reader, max uint32) (byte, []byte, error) {
	first, err := r.ReadByte()
	if err != nil {
		return 0, nil, err
	}
	var length uint32
	var shift uint
	hdr := 1
	for i := 0; ; i++ {
		if i == 4 {
			return 0, nil, fmt.Errorf("%w: remaining length longer than 4 bytes", ErrMalformed) // [MQTT-1.5.5-1]
		}
		b, err := r.ReadByte()
		if err != nil {
			return 0, nil, err
		}
		hdr++
		length |= uint32(b&0x7f) << shift
		shift += 7
		if b&0x80 == 0 {
			break
		}
	}
	if uint64(length)+uint64(hdr) > uint64(max) {
		return 0, nil, fmt.Errorf("%w: %d bytes declared, limit %d", ErrPacketTooLarge, uint64(length)+uint64(hdr), max)
	}
	if err := checkHeader(first); err != nil {
		return 0, nil, err // refused before the body is read
	}
	body := make([]byte, length)
	if _, err := io.ReadFull(r, body); err != nil {
		return 0, nil, err
	}
	return first, body, nil
}

// decodeV5 decodes the body of an MQTT v5 packet with paho's codec.
func decodeV5(first byte, body []byte) (*packets.ControlPacket, error) {
	cp, err := newPacket(first)
	if err != nil {
		return nil, err
	}
	if err := unpack(cp, body); err != nil {
		return nil, err
	}
	return cp, nil
}

// checkHeader checks the packet type and the fixed header flags [MQTT-2.1.3-1] (the same in 3.1.1
// [MQTT-2.2.2-2]) without allocating.
func checkHeader(first byte) error {
	typ, flags := first>>4, first&0x0f
	switch typ {
	case 0, packets.CONNACK, packets.SUBACK, packets.UNSUBACK, packets.PINGRESP:
		return fmt.Errorf("%w: packet type %d not accepted from a client", ErrMalformed, typ)
	case packets.PUBLISH:
		if (flags>>1)&3 == 3 {
			return fmt.Errorf("%w: PUBLISH with QoS 3", ErrMalformed) // [MQTT-3.3.1-4]
		}
		if (flags>>1)&3 == 0 && flags&8 != 0 {
			return fmt.Errorf("%w: DUP set on QoS 0", ErrMalformed) // [MQTT-3.3.1-2]
		}
	case packets.PUBREL, packets.SUBSCRIBE, packets.UNSUBSCRIBE:
		if flags != 2 {
			return fmt.Errorf("%w: reserved flags %x", ErrMalformed, flags)
		}
	default:
		if flags != 0 {
			return fmt.Errorf("%w: reserved flags %x", ErrMalformed, flags)
		}
	}
	return nil
}

// newPacket checks the fixed header and prepares the content.
func newPacket(first byte) (*packets.ControlPacket, error) {
	if err := checkHeader(first); err != nil {
		return nil, err
	}
	typ, flags := first>>4, first&0x0f
	cp := packets.NewControlPacket(typ)
	if cp == nil {
		return nil, fmt.Errorf("%w: packet type %d not accepted from a client", ErrMalformed, typ)
	}
	if p, ok := cp.Content.(*packets.Publish); ok {
		p.QoS = (flags >> 1) & 3
		p.Duplicate = flags&8 != 0
		p.Retain = flags&1 != 0
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
