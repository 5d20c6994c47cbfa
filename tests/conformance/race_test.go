package conformance

import (
	"os"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// raceReports finds the race detector's report in a component's log (here the components-go-sdk
// v0.3.0 ack race, taken from a run of TestPubSubConformance on the SDK's server), which
// checkNoRace then fails on, and finds none in a log without one.
func TestRaceReports(t *testing.T) {
	b, err := os.ReadFile("testdata/sdk-ack-race.txt")
	require.NoError(t, err)
	reports := raceReports("component log line\n" + string(b) + "\nanother line\n")
	require.Len(t, reports, 1)
	assert.Contains(t, reports[0], "components-go-sdk@v0.3.0/internal/ack.go")
	assert.Empty(t, raceReports("no race here\n"))
}
