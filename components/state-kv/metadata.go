package statekv

import (
	"fmt"
	"time"

	"github.com/mqdapr/mqdapr/internal/mdparse"
	"github.com/mqdapr/mqdapr/internal/mqttconn"
)

// Metadata is the component's configuration. Field tags are the metadata keys.
type Metadata struct {
	mqttconn.Settings `mapstructure:",squash"`

	// KeyPrefix is interpreted by daprd, which prefixes the keys it passes (appid||key by default);
	// the component never prefixes again. Accepted so that a YAML written for AIO's component works.
	KeyPrefix string `mapstructure:"keyPrefix"`
	// RequestTimeout bounds one request/response exchange with the broker's key-value store (and
	// is sent as the request's Message Expiry), when the caller's context has no earlier deadline.
	RequestTimeout time.Duration `mapstructure:"requestTimeout"`
	// Persistent sends `aio-persistence: true` with every SET (the broker persists the key when its
	// persistence is configured for it). Default true.
	Persistent bool `mapstructure:"persistent"`
	// MaxValueBytes refuses larger values before sending them (the broker has its own limit).
	MaxValueBytes int `mapstructure:"maxValueBytes"`
	// BulkParallelism bounds the concurrent requests of one BulkGet/BulkSet/BulkDelete.
	BulkParallelism int `mapstructure:"bulkParallelism"`
	// LockTTL is the lease of the lock an ETag write takes on `<key><lockSuffix>`; a crashed writer
	// holds the key for at most this long. LockMargin is the part of it never used for writing (it
	// covers the delivery delay of the final SET; see DESIGN.md).
	LockTTL    time.Duration `mapstructure:"lockTTL"`
	LockMargin time.Duration `mapstructure:"lockMargin"`
	// LockSuffix is appended to a key to name its lock; keys ending with it are refused.
	LockSuffix string `mapstructure:"lockSuffix"`
}

// Defaults of the component's own fields.
const (
	DefaultRequestTimeout  = 10 * time.Second
	DefaultMaxValueBytes   = 4 << 20
	DefaultBulkParallelism = 16
	DefaultLockTTL         = 10 * time.Second
	DefaultLockMargin      = 4 * time.Second
	DefaultLockSuffix      = "\x00mqdapr-lock"
)

func defaultMetadata() Metadata {
	return Metadata{
		Settings:        mqttconn.DefaultSettings(),
		RequestTimeout:  DefaultRequestTimeout,
		Persistent:      true,
		MaxValueBytes:   DefaultMaxValueBytes,
		BulkParallelism: DefaultBulkParallelism,
		LockTTL:         DefaultLockTTL,
		LockMargin:      DefaultLockMargin,
		LockSuffix:      DefaultLockSuffix,
	}
}

// parseMetadata decodes and validates props; unknown keys (other than daprd's) are returned for a
// warning.
func parseMetadata(props map[string]string) (Metadata, []string, error) {
	md := defaultMetadata()
	unknown, err := mdparse.DecodeComponent(props, &md)
	if err != nil {
		return md, nil, fmt.Errorf("%w: %w", ErrInvalidMetadata, err)
	}
	if err := md.validate(); err != nil {
		return md, nil, err
	}
	return md, unknown, nil
}

// ParseMetadata decodes and validates a Component's metadata exactly as Init does, without any
// I/O, and returns the unknown keys Init would warn about: for checks outside the package, such as
// the offline validation of the Kubernetes manifests (tests/kubernetes).
func ParseMetadata(props map[string]string) (Metadata, []string, error) {
	return parseMetadata(props)
}

func (m *Metadata) validate() error {
	if err := m.Settings.Validate(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidMetadata, err)
	}
	if m.RequestTimeout < 100*time.Millisecond || m.RequestTimeout > time.Hour {
		return fmt.Errorf("%w: requestTimeout=%s: want from 100ms to 1h", ErrInvalidMetadata, m.RequestTimeout)
	}
	if m.MaxValueBytes < 0 || m.MaxValueBytes > maxMQTTPayload {
		return fmt.Errorf("%w: maxValueBytes=%d: want from 0 to %d", ErrInvalidMetadata, m.MaxValueBytes, maxMQTTPayload)
	}
	if m.BulkParallelism < 1 || m.BulkParallelism > 1024 {
		return fmt.Errorf("%w: bulkParallelism=%d: want from 1 to 1024", ErrInvalidMetadata, m.BulkParallelism)
	}
	if m.LockTTL < time.Second || m.LockTTL > time.Hour {
		return fmt.Errorf("%w: lockTTL=%s: want from 1s to 1h", ErrInvalidMetadata, m.LockTTL)
	}
	if m.LockMargin <= 0 || m.LockMargin >= m.LockTTL {
		return fmt.Errorf("%w: lockMargin=%s: want more than 0 and less than lockTTL (%s)", ErrInvalidMetadata, m.LockMargin, m.LockTTL)
	}
	if m.LockSuffix == "" {
		return fmt.Errorf("%w: lockSuffix is empty: want a suffix no application key ends with (default %q)", ErrInvalidMetadata, DefaultLockSuffix)
	}
	return nil
}

// maxMQTTPayload is an upper bound of what one MQTT packet can carry.
const maxMQTTPayload = 268435455
