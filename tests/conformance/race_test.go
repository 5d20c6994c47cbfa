package conformance

import (
	"os"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The race filter lets through only the components-go-sdk v0.3.0 ack race (a report taken from a
// run of TestPubSubConformance), not a race with either access elsewhere.
func TestKnownSDKRace(t *testing.T) {
	b, err := os.ReadFile("testdata/sdk-ack-race.txt")
	require.NoError(t, err)
	reports := raceReports("component log line\n" + string(b) + "\nanother line\n")
	require.Len(t, reports, 1)
	assert.True(t, knownSDKRace(reports[0]))

	// The same report with the second access's first frame in mqdapr's code.
	i := strings.Index(reports[0], "Previous read at")
	require.Positive(t, i)
	other := reports[0][:i] + strings.Replace(reports[0][i:],
		"github.com/dapr-sandbox/components-go-sdk@v0.3.0/internal/ack.go:89", "/src/mqdapr/components/pubsub-mqtt5/inbound.go:142", 1)
	require.NotEqual(t, reports[0], other)
	assert.False(t, knownSDKRace(other))
	assert.Empty(t, raceReports("no race here\n"))
}
