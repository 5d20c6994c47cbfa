// Package resp3 is a strict codec for the subset of RESP3 that the broker key-value store protocol
// (the Azure IoT Operations "state store") uses, as described in
// docs/state-store-protocol.md#resp3-subset and #responses.
//
// Requests and notifications are flat arrays of bulk strings (`*N\r\n` then `$len\r\n<bytes>\r\n` per
// element). Responses are one of: a simple string (`+OK\r\n`), an error (`-ERR <text>\r\n`), an
// integer (`:-1\r\n`), a bulk string (`$n\r\n<bytes>\r\n`), the null bulk string (`$-1\r\n`) or the
// RESP3 null (`_\r\n`, never sent by the store but accepted by the client side).
//
// The decoders are strict so that every accepted input has exactly one encoding: lengths and integers
// are canonical decimals (no sign other than a leading '-', no leading zeros, no "-0"), every line ends
// in "\r\n", and the whole input must be consumed. Malformed input yields an error wrapping one of the
// sentinel errors in errors.go and naming the offset at fault; the decoders never panic and never
// allocate a declared length before checking it against the bytes actually present.
//
// Decoded byte slices alias the input; copy them if the input buffer is reused.
package resp3
