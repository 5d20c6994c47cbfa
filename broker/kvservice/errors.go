package kvservice

import "errors"

// ErrClosed is returned by Handle and Start after Close.
var ErrClosed = errors.New("kvservice: closed")

// ErrAlreadyStarted is returned by Start when it is called a second time.
var ErrAlreadyStarted = errors.New("kvservice: already started")

// ErrInvalidOptions is returned by New when Options miss a required field; the message names it.
var ErrInvalidOptions = errors.New("kvservice: invalid options")

// ErrNoDeliverer is returned by Start when its Publisher cannot deliver to one connection (it is
// not a broker.Deliverer, as the *broker.Broker is): notifications must not be routed.
var ErrNoDeliverer = errors.New("kvservice: the publisher is not a broker.Deliverer")

// errCorruptLog is returned by OpenLogStore for a record of kv.log that passes its checksum but
// cannot be decoded.
var errCorruptLog = errors.New("corrupt record")
