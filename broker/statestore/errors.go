package statestore

import "errors"

// ErrNotRequestTopic is returned by Handle when the request was not published on RequestTopic; the
// adapter should only pass requests for which Match returned true.
var ErrNotRequestTopic = errors.New("statestore: not the state store request topic")

// ErrInvalidQoS is returned by Handle for a request not published at QoS 1
// (docs/state-store-protocol.md#mqtt-properties). No response is produced.
var ErrInvalidQoS = errors.New("statestore: request QoS must be 1")

// ErrMissingResponseTopic is returned by Handle for a request without a Response Topic property
// (docs/state-store-protocol.md#mqtt-properties); there is nowhere to send a response.
var ErrMissingResponseTopic = errors.New("statestore: request has no response topic")

// ErrForbiddenResponseTopic is returned by Handle when the response topic is the request topic or
// starts with the notification prefix `clients/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8`
// (docs/state-store-protocol.md#topics). The broker disconnects a client that uses either one.
var ErrForbiddenResponseTopic = errors.New("statestore: forbidden response topic")

// ErrInvalidResponseTopic is returned by Handle when the response topic contains an MQTT wildcard
// ('+' or '#') or a NUL character, which no PUBLISH topic may contain.
var ErrInvalidResponseTopic = errors.New("statestore: invalid response topic")

// ErrMissingCorrelationData is returned by Handle for a request without Correlation Data (spec
// docs/state-store-protocol.md#mqtt-properties); the client could not match a response to it.
var ErrMissingCorrelationData = errors.New("statestore: request has no correlation data")

// ErrClosed is returned by Handle, Load and Expire after Close.
var ErrClosed = errors.New("statestore: engine closed")

// ErrInvalidOptions is returned by NewEngine when an Options field is out of range; the message names
// the field and the accepted range.
var ErrInvalidOptions = errors.New("statestore: invalid options")

// ErrLoad is returned by Load when the persistence Store fails or returns an invalid record.
var ErrLoad = errors.New("statestore: loading persisted keys failed")

// The texts of the in-band command errors, byte-exact as the SDKs match them
// (docs/state-store-protocol.md#error-strings). They travel as `-ERR <text>\r\n` with `__stat` 200.
const (
	MsgTimestampSkew      = "the request timestamp is too far in the future; ensure that the client and broker system clocks are synchronized"
	MsgFencingRequired    = "a fencing token is required for this request"
	MsgFencingTokenSkew   = "the request fencing token timestamp is too far in the future; ensure that the client and broker system clocks are synchronized"
	MsgFencingTokenLower  = "the request fencing token is a lower version than the fencing token protecting the resource"
	MsgQuotaExceeded      = "the quota has been exceeded"
	MsgSyntaxError        = "syntax error"
	MsgNotAuthorized      = "not authorized"
	MsgUnknownCommand     = "unknown command"
	MsgWrongArgs          = "wrong number of arguments"
	MsgMissingTimestamp   = "missing timestamp"
	MsgMalformedTimestamp = "malformed timestamp"
	MsgKeyLengthZero      = "the key length is zero"
)
