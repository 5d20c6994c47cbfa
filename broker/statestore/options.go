package statestore

import (
	"fmt"
	"log/slog"
	"math"
	"strings"
	"time"
)

// Access is the kind of key access an Authorizer is asked about.
type Access uint8

const (
	// AccessRead is asked for GET and KEYNOTIFY (including STOP).
	AccessRead Access = iota + 1
	// AccessWrite is asked for SET, DEL and VDEL.
	AccessWrite
)

// String returns "read" or "write".
func (a Access) String() string {
	switch a {
	case AccessRead:
		return "read"
	case AccessWrite:
		return "write"
	default:
		return "unknown"
	}
}

// Authorizer decides key-level access. It is called with the engine's lock held, so it must be quick
// and must not call back into the Engine. Returning false answers `-ERR not authorized`
// (docs/state-store-protocol.md#responses). key aliases the request payload and must not be
// retained. username is the sender's (Request.Username).
type Authorizer func(clientID, username string, key []byte, access Access) bool

// Options configures an Engine. Start from NewDefaultOptions.
type Options struct {
	// NodeID is the node ID in the versions the engine issues (the HLC's third part); it must not
	// contain ':'.
	NodeID string
	// Now is the wall clock for versions, the skew check and PX deadlines; nil means time.Now.
	Now func() time.Time
	// MaxClockSkew is how far a request's __ts or __ft may be ahead of Now
	// (docs/state-store-protocol.md#versions-hlc: one minute).
	MaxClockSkew time.Duration
	// MaxKeys limits the number of keys; a SET that would create one more answers `-ERR the quota has
	// been exceeded`. 0 means no limit.
	MaxKeys int
	// MaxKeyBytes and MaxValueBytes limit the sizes of a SET's key and value, with the same quota
	// error. 0 means no limit.
	MaxKeyBytes   int
	MaxValueBytes int
	// MaxWatches limits the number of KEYNOTIFY registrations over all clients, with the quota error.
	// 0 means no limit.
	MaxWatches int
	// Store, if not nil, receives the keys to persist; see Store and Engine.Load. nil disables
	// persistence (the `aio-persistence` property is then ignored).
	Store Store
	// PersistAll persists every key, as the AIO broker's stateStore mode All does; otherwise only keys
	// whose latest SET carried `aio-persistence: true` are persisted
	// (docs/state-store-protocol.md#mqtt-properties).
	PersistAll bool
	// Authorize, if not nil, is the key-level authorization hook.
	Authorize Authorizer
	// Logger receives store failures that cannot be reported to a client (expiry); nil discards.
	Logger *slog.Logger
}

// Default limits of NewDefaultOptions: generous for a development broker, small enough that one
// client cannot exhaust memory by accident.
const (
	DefaultMaxKeys       = 100_000
	DefaultMaxKeyBytes   = 64 << 10
	DefaultMaxValueBytes = 4 << 20
	DefaultMaxWatches    = 100_000
	DefaultNodeID        = "mqdapr-statestore"
)

// NewDefaultOptions returns the default Options: the default limits, a one-minute clock skew, the
// system clock, no persistence and no authorization hook.
func NewDefaultOptions() Options {
	return Options{
		NodeID:        DefaultNodeID,
		MaxClockSkew:  time.Minute,
		MaxKeys:       DefaultMaxKeys,
		MaxKeyBytes:   DefaultMaxKeyBytes,
		MaxValueBytes: DefaultMaxValueBytes,
		MaxWatches:    DefaultMaxWatches,
	}
}

// validate checks every field's range; errors wrap ErrInvalidOptions and name the field.
func (o Options) validate() error {
	if strings.Contains(o.NodeID, ":") {
		return fmt.Errorf("NodeID %q must not contain ':': %w", o.NodeID, ErrInvalidOptions)
	}
	if o.PersistAll && o.Store == nil {
		return fmt.Errorf("PersistAll needs a Store: %w", ErrInvalidOptions)
	}
	if o.MaxClockSkew <= 0 {
		return fmt.Errorf("MaxClockSkew %v must be > 0: %w", o.MaxClockSkew, ErrInvalidOptions)
	}
	for _, f := range []struct {
		name string
		v    int
	}{
		{"MaxKeys", o.MaxKeys}, {"MaxKeyBytes", o.MaxKeyBytes},
		{"MaxValueBytes", o.MaxValueBytes}, {"MaxWatches", o.MaxWatches},
	} {
		if f.v < 0 || f.v > math.MaxInt32 {
			return fmt.Errorf("%s %d must be between 0 (no limit) and %d: %w", f.name, f.v, math.MaxInt32, ErrInvalidOptions)
		}
	}
	return nil
}
