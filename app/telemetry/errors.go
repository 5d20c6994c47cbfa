// Package telemetry defines the device telemetry payload, validates it and normalises it: units to
// canonical ones (°C, bar, …) and timestamps to UTC. It does no I/O.
package telemetry

import "errors"

// ErrInvalid is returned (wrapped, with the field at fault and what would be accepted) for every
// payload that cannot be turned into a Reading. Such a message goes to the dead-letter topic: a
// redelivery would fail the same way.
var ErrInvalid = errors.New("invalid telemetry")

// ErrNoIdentity is returned (wrapped in ErrInvalid as well) when a payload has neither a sequence
// number nor a message-id user property: without identity it cannot be deduplicated.
var ErrNoIdentity = errors.New("no message identity (seq in the payload or message-id user property)")
