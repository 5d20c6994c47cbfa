package broker

import (
	"bufio"
	"bytes"
	"fmt"

	"github.com/eclipse/paho.golang/packets"
	mp "github.com/mochi-mqtt/server/v2/packets"
)

// MQTT 3.1.1 (protocol level 4) beside v5.
//
// The broker keeps one internal form, paho.golang's v5 packets: a 3.1.1 connection is translated
// at its edges. The reader still reads each frame itself and checks the declared size before
// allocating the body (readFrame); the body of a 3.1.1 packet is decoded by mochi-mqtt's packets
// package, which decodes and encodes both 3.1.1 and v5 from a byte slice it is given (it reads no
// network itself, so the size check stays ours; it was in go.mod already: the pub/sub
// component's tests run a mochi broker), and is then turned into the paho form the handlers
// take. Not paho.golang: v5 only. Not paho.mqtt.golang's packets.ReadPacket: it reads the frame
// itself and allocates whatever the header declares, which the size rule forbids. Outgoing
// packets are turned into mochi's form and encoded as 3.1.1 by the writer: v5 properties (expiry
// interval, user properties, subscription identifiers, ...) are dropped (3.1.1 §3.3.2: a PUBLISH
// variable header is the topic name and packet identifier only), reason codes become 3.1.1 return
// codes, and a DISCONNECT from the server, which 3.1.1 does not have, becomes closing the
// connection.
//
// The checks mochi leaves to its caller are made here: exact lengths of the fixed-size packets,
// trailing bytes after a CONNECT payload, the CONNECT reserved flag, password without user name.

// errV3Refused marks a CONNECT answered with CONNACK return code 0x01 (unacceptable protocol
// version) [MQTT-3.1.2-2].
var errV3Refused = fmt.Errorf("%w: unacceptable protocol version", ErrMalformed)

// connectProtocol returns the protocol name and level of a CONNECT body; ok is false when the body
// is too short to hold them.
func connectProtocol(body []byte) (name string, level byte, ok bool) {
	if len(body) < 2 {
		return "", 0, false
	}
	n := int(body[0])<<8 | int(body[1])
	if len(body) < 2+n+1 {
		return "", 0, false
	}
	return string(body[2 : 2+n]), body[2+n], true
}

// readFirst reads the first packet of a connection and decides its protocol version: a CONNECT
// with level 4 makes the connection 3.1.1 (c.v3), levels 3 and 4 with their names are answered in
// 3.1.1's format, anything else goes the v5 way. Runs in the reader before anything is queued.
func (c *conn) readFirst() (*packets.ControlPacket, error) {
	first, body, err := readFrame(c.br, c.b.opts.MaxPacketSize)
	if err != nil {
		return nil, err
	}
	if first>>4 == packets.CONNECT {
		if name, level, ok := connectProtocol(body); ok && level < 5 {
			switch {
			case name == "MQTT" && level == 4:
				c.setV3()
				return decodeV3(first, body)
			case name == "MQIsdp" || name == "MQTT":
				// MQTT 3.1 (MQIsdp, level 3) or another level under 4: refused in the format its
				// client reads [MQTT-3.1.2-2].
				c.setV3()
				return nil, fmt.Errorf("%w: protocol %q level %d, accepted: MQTT level 4 (3.1.1) or 5", errV3Refused, name, level)
			default:
				// [MQTT-3.1.2-1]: a wrong protocol name may be answered by closing the connection.
				c.setV3()
				return nil, fmt.Errorf("%w: protocol name %q, accepted: \"MQTT\"", ErrMalformed, name)
			}
		}
	}
	return decodeV5(first, body)
}

// setV3 makes the connection 3.1.1; under wmu, as the writer may be closing it meanwhile (broker
// shutdown).
func (c *conn) setV3() {
	c.wmu.Lock()
	c.v3 = true
	c.wmu.Unlock()
}

// read reads the next packet in the connection's protocol version.
func (c *conn) read() (*packets.ControlPacket, error) {
	first, body, err := readFrame(c.br, c.b.opts.MaxPacketSize)
	if err != nil {
		return nil, err
	}
	if c.v3 {
		return decodeV3(first, body)
	}
	return decodeV5(first, body)
}

func malformedV3(format string, args ...any) error {
	return fmt.Errorf("%w: 3.1.1 %s", ErrMalformed, fmt.Sprintf(format, args...))
}

// decodeV3 decodes the body of a 3.1.1 packet into the broker's (paho v5) form.
func decodeV3(first byte, body []byte) (cp *packets.ControlPacket, err error) {
	defer func() {
		if r := recover(); r != nil {
			cp, err = nil, malformedV3("packet: %v", r)
		}
	}()
	typ := first >> 4
	if typ == packets.AUTH {
		return nil, malformedV3("has no packet type 15 (AUTH is MQTT v5)") // 3.1.1 §2.2.1: type 15 is reserved
	}
	cp, err = newPacket(first) // fixed header flags, the same in 3.1.1 [MQTT-2.2.2-1] [MQTT-2.2.2-2]
	if err != nil {
		return nil, err
	}
	pk := &mp.Packet{ProtocolVersion: 4, FixedHeader: mp.FixedHeader{Type: typ, Remaining: len(body)}}
	fixed := func(name string, n int) error {
		if len(body) != n {
			return malformedV3("%s has a %d-byte body, got %d (v5 reason code or properties are not 3.1.1)", name, n, len(body))
		}
		return nil
	}
	switch p := cp.Content.(type) {
	case *packets.Connect:
		if err := pk.ConnectDecode(body); err != nil {
			return nil, malformedV3("CONNECT: %v", err)
		}
		k := &pk.Connect
		if pk.ReservedBit != 0 {
			return nil, malformedV3("CONNECT reserved flag set") // [MQTT-3.1.2-3]
		}
		if k.PasswordFlag && !k.UsernameFlag {
			return nil, malformedV3("CONNECT password flag without user name flag") // [MQTT-3.1.2-22]
		}
		want := 2 + len(k.ProtocolName) + 4 + 2 + len(k.ClientIdentifier)
		if k.WillFlag {
			want += 4 + len(k.WillTopic) + len(k.WillPayload)
		}
		if k.UsernameFlag {
			want += 2 + len(k.Username)
		}
		if k.PasswordFlag {
			want += 2 + len(k.Password)
		}
		if want != len(body) {
			return nil, malformedV3("CONNECT has %d bytes after its payload (v5 properties are not 3.1.1)", len(body)-want)
		}
		*p = packets.Connect{
			ProtocolName: string(k.ProtocolName), ProtocolVersion: 4, CleanStart: k.Clean, KeepAlive: k.Keepalive,
			ClientID: k.ClientIdentifier, WillFlag: k.WillFlag, WillQOS: k.WillQos, WillRetain: k.WillRetain,
			WillTopic: k.WillTopic, UsernameFlag: k.UsernameFlag, Username: string(k.Username),
			PasswordFlag: k.PasswordFlag, Properties: &packets.Properties{},
		}
		if k.WillFlag {
			p.WillMessage = append([]byte{}, k.WillPayload...)
		}
		if k.PasswordFlag {
			p.Password = append([]byte{}, k.Password...)
		}
	case *packets.Publish:
		pk.FixedHeader.Qos = p.QoS
		if err := pk.PublishDecode(body); err != nil {
			return nil, malformedV3("PUBLISH: %v", err)
		}
		p.Topic, p.PacketID, p.Payload, p.Properties = pk.TopicName, pk.PacketID, pk.Payload, &packets.Properties{}
	case *packets.Puback:
		if err := fixed("PUBACK", 2); err != nil {
			return nil, err
		}
		p.PacketID = uint16(body[0])<<8 | uint16(body[1])
	case *packets.Pubrec:
		if err := fixed("PUBREC", 2); err != nil {
			return nil, err
		}
		p.PacketID = uint16(body[0])<<8 | uint16(body[1])
	case *packets.Pubrel:
		if err := fixed("PUBREL", 2); err != nil {
			return nil, err
		}
		p.PacketID = uint16(body[0])<<8 | uint16(body[1])
	case *packets.Pubcomp:
		if err := fixed("PUBCOMP", 2); err != nil {
			return nil, err
		}
		p.PacketID = uint16(body[0])<<8 | uint16(body[1])
	case *packets.Subscribe:
		if err := pk.SubscribeDecode(body); err != nil {
			// Includes a requested QoS byte with its reserved bits set (v5 subscription options)
			// [MQTT-3.8.3-4].
			return nil, malformedV3("SUBSCRIBE: %v (requested QoS must be 0, 1 or 2)", err)
		}
		p.PacketID, p.Properties = pk.PacketID, &packets.Properties{}
		for _, f := range pk.Filters {
			p.Subscriptions = append(p.Subscriptions, packets.SubOptions{Topic: f.Filter, QoS: f.Qos})
		}
	case *packets.Unsubscribe:
		if err := pk.UnsubscribeDecode(body); err != nil {
			return nil, malformedV3("UNSUBSCRIBE: %v", err)
		}
		p.PacketID, p.Properties = pk.PacketID, &packets.Properties{}
		for _, f := range pk.Filters {
			p.Topics = append(p.Topics, f.Filter)
		}
	case *packets.Pingreq:
		if err := fixed("PINGREQ", 0); err != nil {
			return nil, err
		}
	case *packets.Disconnect:
		if err := fixed("DISCONNECT", 0); err != nil {
			return nil, err
		}
		p.ReasonCode, p.Properties = CodeSuccess, &packets.Properties{}
	default:
		return nil, malformedV3("packet type %d not accepted from a client", typ)
	}
	return cp, nil
}

// v3ConnackCode is the 3.1.1 return code for a v5 CONNACK reason code; ok is false for the refusals
// 3.1.1 answers by closing the connection without CONNACK (malformed packet, protocol error, invalid
// will topic) [MQTT-3.2.2-5].
func v3ConnackCode(code byte) (byte, bool) {
	switch code {
	case CodeSuccess:
		return 0x00, true
	case CodeUnsupportedProtocolVersion:
		return 0x01, true // unacceptable protocol version
	case CodeClientIdentifierNotValid:
		return 0x02, true // identifier rejected
	case CodeServerUnavailable, CodeServerBusy, CodeQuotaExceeded, CodeServerShuttingDown, CodeUnspecifiedError, CodeImplementationSpecificError, CodeConnectionRateExceeded:
		return 0x03, true // server unavailable
	case CodeBadUserNameOrPassword:
		return 0x04, true // bad user name or password
	case CodeNotAuthorized, CodeBadAuthenticationMethod:
		return 0x05, true // not authorized
	}
	return 0, false
}

// writeV3 encodes cp, in the broker's (paho v5) form, as 3.1.1 into w; packets 3.1.1 does not have
// (DISCONNECT and AUTH from the server, a CONNACK refusal without a 3.1.1 return code) are skipped.
// buf is the writer's scratch buffer.
func writeV3(w *bufio.Writer, buf *bytes.Buffer, cp *packets.ControlPacket) error {
	pk := &mp.Packet{ProtocolVersion: 4, FixedHeader: mp.FixedHeader{Type: cp.Type}}
	buf.Reset()
	var err error
	switch p := cp.Content.(type) {
	case *packets.Connack:
		rc, ok := v3ConnackCode(p.ReasonCode)
		if !ok {
			return nil
		}
		pk.ReasonCode, pk.SessionPresent = rc, p.SessionPresent && rc == 0 // [MQTT-3.2.2-4]
		err = pk.ConnackEncode(buf)
	case *packets.Publish:
		// Properties dropped: 3.1.1 cannot carry them.
		pk.FixedHeader.Qos, pk.FixedHeader.Retain, pk.FixedHeader.Dup = p.QoS, p.Retain, p.Duplicate
		pk.TopicName, pk.PacketID, pk.Payload = p.Topic, p.PacketID, p.Payload
		err = pk.PublishEncode(buf)
	case *packets.Puback:
		pk.PacketID = p.PacketID
		err = pk.PubackEncode(buf)
	case *packets.Pubrec:
		pk.PacketID = p.PacketID
		err = pk.PubrecEncode(buf)
	case *packets.Pubrel:
		pk.FixedHeader.Qos = 1 // [MQTT-3.6.1-1]
		pk.PacketID = p.PacketID
		err = pk.PubrelEncode(buf)
	case *packets.Pubcomp:
		pk.PacketID = p.PacketID
		err = pk.PubcompEncode(buf)
	case *packets.Suback:
		pk.PacketID = p.PacketID
		pk.ReasonCodes = make([]byte, len(p.Reasons))
		for i, r := range p.Reasons {
			if r >= 0x80 {
				r = 0x80 // failure [MQTT-3.9.3-2]
			}
			pk.ReasonCodes[i] = r
		}
		err = pk.SubackEncode(buf)
	case *packets.Unsuback:
		pk.PacketID = p.PacketID
		err = pk.UnsubackEncode(buf)
	case *packets.Pingresp:
		err = pk.PingrespEncode(buf)
	case *packets.Disconnect, *packets.Auth:
		return nil
	default:
		return fmt.Errorf("broker: no 3.1.1 encoding for packet type %d", cp.Type)
	}
	if err != nil {
		return err
	}
	_, err = w.Write(buf.Bytes())
	return err
}

// v3Connect applies 3.1.1's CONNECT rules before the common path: a zero-length client id needs
// clean session 1 [MQTT-3.1.3-8] (then one is assigned [MQTT-3.1.3-6]); clean session 0 keeps the
// session after the connection for V3SessionExpiry (capped by MaxSessionExpiry), clean session 1
// ends it with the connection [MQTT-3.1.2-6]. It returns the refusal's v5 code (CONNACK maps it
// to the 3.1.1 return code) or CodeSuccess.
func (c *conn) v3Connect(p *packets.Connect) byte {
	if p.ClientID == "" && !p.CleanStart {
		c.log.Info("3.1.1 CONNECT refused: zero-length client id needs clean session 1")
		return CodeClientIdentifierNotValid // return code 0x02 [MQTT-3.1.3-8]
	}
	if !p.CleanStart {
		e := min(c.b.opts.V3SessionExpiry, c.b.opts.MaxSessionExpiry)
		p.Properties.SessionExpiryInterval = &e
	}
	return CodeSuccess
}

// v3Refuse handles a refused QoS 1/2 PUBLISH from a 3.1.1 client, which has no negative
// acknowledgement [MQTT-3.3.5-2]: an authorization refusal is acknowledged as if delivered (the
// message is dropped; Stats counted the refusal), as 3.1.1 allows and Mosquitto does, so the client
// does not resend it forever; any other refusal (quota, store failure) closes the connection, so the
// client sends the message again when it reconnects rather than losing it. It reports whether the
// positive acknowledgement is to be sent.
func (c *conn) v3Refuse(code byte) bool {
	if code == CodeNotAuthorized {
		return true
	}
	c.log.Info("closing 3.1.1 connection: publish refused, 3.1.1 has no negative acknowledgement", "reason", fmt.Sprintf("0x%02X", code))
	c.closeWith(nil)
	return false
}
