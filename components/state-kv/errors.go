package statekv

import (
	"errors"
	"fmt"
)

var (
	// ErrNotInitialized is returned by every operation before a successful Init (daprd does not
	// re-initialise a component process that restarted: restart daprd with it).
	ErrNotInitialized = errors.New("mqttkv state: component not initialised (Init has not succeeded; if the component restarted, restart daprd too)")
	// ErrClosed is returned by every operation after Close.
	ErrClosed = errors.New("mqttkv state: component closed")
	// ErrInvalidMetadata is wrapped by component and per-request metadata errors; the message names
	// the key and the accepted values.
	ErrInvalidMetadata = errors.New("mqttkv state: invalid metadata")
	// ErrInvalidKey is returned for an empty key, or a key ending with the lock suffix reserved for
	// ETag writes (lockSuffix metadata).
	ErrInvalidKey = errors.New("mqttkv state: invalid key")
	// ErrInvalidValue is returned when a value cannot be marshalled or exceeds maxValueBytes or the
	// broker's Maximum Packet Size.
	ErrInvalidValue = errors.New("mqttkv state: invalid value")
	// ErrNoResponse is returned when the broker acknowledged a request but no response arrived within
	// requestTimeout: the broker has no key-value store (only brokers implementing the Azure IoT
	// Operations state store protocol have one), or it is overloaded. Retriable.
	ErrNoResponse = errors.New("mqttkv state: no response from the broker's key-value store")
	// ErrRequestFailed is returned when a request could not be sent or was refused (no connection,
	// PUBACK failure code), and wrapped by ErrOutcomeUnknown. Retriable.
	ErrRequestFailed = errors.New("mqttkv state: request to the broker failed")
	// ErrOutcomeUnknown (which wraps ErrRequestFailed) is returned when a request was sent but its
	// response can no longer arrive: the connection was lost first, or neither PUBACK nor response
	// came within requestTimeout. It may or may not have been applied; it is never sent again.
	// Retriable.
	ErrOutcomeUnknown = fmt.Errorf("%w: its outcome is unknown (it may or may not have been applied)", ErrRequestFailed)
	// ErrStoreError is returned when the key-value store answered a command with an error (`-ERR
	// <text>`: quota exceeded, not authorized, clock skew...); the text follows.
	ErrStoreError = errors.New("mqttkv state: the key-value store refused the command")
	// ErrUnexpectedResponse is returned when a response is not one the protocol defines for the
	// command sent.
	ErrUnexpectedResponse = errors.New("mqttkv state: unexpected response from the key-value store")
	// ErrLockTimeout is returned by a write that needs the key's lease lock (an ETag write, a delete,
	// a write without an ETag to a fenced key) when the lock stayed taken by another writer until
	// requestTimeout. Nothing was written. Retriable.
	ErrLockTimeout = errors.New("mqttkv state: the key is locked by another ETag write")
	// ErrLeaseExpired is returned by a write under the key's lease lock that could not be sent within
	// the safe part of the lease (lockTTL minus lockMargin), or whose token a writer holding a newer
	// lease overtook; nothing was written. Retriable.
	ErrLeaseExpired = errors.New("mqttkv state: ETag write took longer than its lease lock allows")
)
