// Package connector is the northbound connector: it receives device telemetry and retained asset
// configuration from pub/sub (through daprd), validates and normalises readings, contextualises
// them with asset metadata and last-known values from the state store, deduplicates them and
// appends them durably to the lake. Handlers return nil only when the message may be acked.
package connector

import "errors"

// ErrInvalidOptions is returned by New when an option is missing or malformed.
var ErrInvalidOptions = errors.New("connector: invalid options")

// ErrUnroutable is returned for a message whose topic matches no subscription filter; retriable
// (it indicates a wiring fault, not a bad message).
var ErrUnroutable = errors.New("connector: topic matches no subscription")

// ErrInvalidConfig wraps the reason an asset configuration message was rejected.
var ErrInvalidConfig = errors.New("invalid asset configuration")
