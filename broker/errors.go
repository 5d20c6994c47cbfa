package broker

import (
	"errors"
	"fmt"
)

// MQTT v5 reason codes used by the broker (MQTT v5 §2.4).
const (
	CodeSuccess                     byte = 0x00
	CodeGrantedQoS1                 byte = 0x01
	CodeGrantedQoS2                 byte = 0x02
	CodeDisconnectWithWill          byte = 0x04
	CodeNoMatchingSubscribers       byte = 0x10
	CodeNoSubscriptionExisted       byte = 0x11
	CodeContinueAuthentication      byte = 0x18
	CodeReAuthenticate              byte = 0x19
	CodeUnspecifiedError            byte = 0x80
	CodeMalformedPacket             byte = 0x81
	CodeProtocolError               byte = 0x82
	CodeImplementationSpecificError byte = 0x83
	CodeUnsupportedProtocolVersion  byte = 0x84
	CodeClientIdentifierNotValid    byte = 0x85
	CodeBadUserNameOrPassword       byte = 0x86
	CodeNotAuthorized               byte = 0x87
	CodeServerUnavailable           byte = 0x88
	CodeServerBusy                  byte = 0x89
	CodeBadAuthenticationMethod     byte = 0x8C
	CodeKeepAliveTimeout            byte = 0x8D
	CodeSessionTakenOver            byte = 0x8E
	CodeTopicFilterInvalid          byte = 0x8F
	CodeTopicNameInvalid            byte = 0x90
	CodePacketIDNotFound            byte = 0x92
	CodeReceiveMaximumExceeded      byte = 0x93
	CodeTopicAliasInvalid           byte = 0x94
	CodePacketTooLarge              byte = 0x95
	CodeQuotaExceeded               byte = 0x97
	CodePayloadFormatInvalid        byte = 0x99
	CodeSharedSubNotSupported       byte = 0x9E
	CodeServerShuttingDown          byte = 0x8B
	CodeMaximumConnectTime          byte = 0xA0
)

// ReasonError carries an MQTT v5 reason code. Hooks (Authenticator, Authorizer, Service) return it to
// choose the code the client receives; the broker returns it for protocol violations.
type ReasonError struct {
	Code   byte
	Reason string
}

func (e *ReasonError) Error() string {
	return fmt.Sprintf("mqtt reason 0x%02X: %s", e.Code, e.Reason)
}

// reasonf builds a *ReasonError.
func reasonf(code byte, format string, args ...any) *ReasonError {
	return &ReasonError{Code: code, Reason: fmt.Sprintf(format, args...)}
}

// codeOf returns the reason code carried by err, or def if err carries none.
func codeOf(err error, def byte) byte {
	var re *ReasonError
	if errors.As(err, &re) && re.Code >= 0x80 {
		return re.Code
	}
	return def
}

var (
	// ErrClosed is returned by Serve, Publish and ListenAndServe once Close has been called.
	ErrClosed = errors.New("broker: closed")
	// ErrPacketTooLarge is returned by the frame reader when a packet's declared size exceeds the limit;
	// nothing is allocated for its body.
	ErrPacketTooLarge = errors.New("broker: packet exceeds maximum packet size")
	// ErrMalformed is returned by the frame reader for a packet that cannot be decoded.
	ErrMalformed = errors.New("broker: malformed packet")
	// ErrQuotaExceeded is returned by Publish when a subscriber's or group's queue is full; nothing
	// was queued anywhere.
	ErrQuotaExceeded = errors.New("broker: queue limit reached")
	// ErrInvalidTopic is returned by Publish for a topic name that is not a valid MQTT topic name.
	ErrInvalidTopic = errors.New("broker: invalid topic name")
	// ErrInvalidQoS is returned by Publish for a QoS other than 0, 1 or 2.
	ErrInvalidQoS = errors.New("broker: invalid QoS")
	// ErrInvalidOptions is returned by New when Options fail validation; the message names the field.
	ErrInvalidOptions = errors.New("broker: invalid options")
	// ErrDataDirVersion is returned by New when the data directory was written by an unknown format version.
	ErrDataDirVersion = errors.New("broker: unsupported data directory format version")

	// errCorrupt is returned when a stored record cannot be decoded (Start fails with it).
	errCorrupt = errors.New("broker: corrupt stored record")
	// errClientDisconnect ends the read loop after a DISCONNECT from the client (nothing is sent back).
	errClientDisconnect = errors.New("client disconnected")
	// errConnEnded: the connection ended (closed by the broker or a failed write) while the reader
	// waited; nothing more is read or answered.
	errConnEnded = errors.New("connection ended")
)
