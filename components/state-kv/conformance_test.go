package statekv

import (
	"testing"

	"github.com/stretchr/testify/require"

	conformance "github.com/dapr/components-contrib/tests/conformance/state"
)

// The Dapr state conformance suite, in process, against the embedded broker and its key-value
// service, with exactly the operations the component advertises (ETag, TTL) plus first-write.
func TestConformance(t *testing.T) {
	kb := startBroker(t, true)
	cfg, err := conformance.NewTestConfig(ComponentName, []string{"etag", "first-write", "ttl"},
		map[string]any{"badEtag": "001000000000000:00000:bad-etag"})
	require.NoError(t, err)
	s := New(testLog)
	t.Cleanup(func() { _ = s.Close() })
	conformance.ConformanceTests(t, props(kb.url(), "conformance"), s, cfg)
}
