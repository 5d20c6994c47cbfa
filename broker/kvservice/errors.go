package kvservice

import "errors"

// ErrClosed is returned by Handle and Start after Close.
var ErrClosed = errors.New("kvservice: closed")

// ErrAlreadyStarted is returned by Start when it is called a second time.
var ErrAlreadyStarted = errors.New("kvservice: already started")

// ErrInvalidOptions is returned by New when Options miss a required field; the message names it.
var ErrInvalidOptions = errors.New("kvservice: invalid options")
