package partition

import (
	"errors"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestTopicAndParseRoundTrip(t *testing.T) {
	for _, f := range []string{"devices/+/telemetry", "$share/g/devices/#", "a"} {
		for i, topic := range Topics(f, 4) {
			filter, pi, pk, ok, err := Parse(topic)
			require.NoError(t, err, topic)
			assert.True(t, ok)
			assert.Equal(t, f, filter)
			assert.Equal(t, i, pi)
			assert.Equal(t, 4, pk)
		}
	}
	assert.Equal(t, "$partition/2of4/devices/+/telemetry", Topic("devices/+/telemetry", 2, 4))
}

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		topic, filter string
		i, k          int
		ok            bool
		err           string
	}{
		{topic: "devices/+/telemetry", filter: "devices/+/telemetry", k: 1},
		{topic: "$share/g/x", filter: "$share/g/x", k: 1},
		{topic: "$partition/0of1/x", filter: "x", k: 1, ok: true},
		{topic: "$partition/255of256/x/#", filter: "x/#", i: 255, k: 256, ok: true},
		{topic: "$partition/4of4/x", err: "partition index 4 out of range for 4 partitions"},
		{topic: "$partition/0of0/x", err: "partition count 0 out of range"},
		{topic: "$partition/0of257/x", err: "partition count 257 out of range"},
		{topic: "$partition/-1of4/x", err: "partition index -1 out of range"},
		{topic: "$partition/01of4/x", err: "in decimal digits"},
		{topic: "$partition/aofb/x", err: "in decimal digits"},
		{topic: "$partition/2-4/x", err: `"2-4" is not <i>of<K>`},
		{topic: "$partition/0of4", err: "no filter after the partition"},
		{topic: "$partition/0of4/", err: "no filter after the partition"},
	} {
		t.Run(tc.topic, func(t *testing.T) {
			filter, i, k, ok, err := Parse(tc.topic)
			if tc.err != "" {
				require.Error(t, err)
				assert.True(t, errors.Is(err, ErrInvalid))
				assert.Contains(t, err.Error(), tc.err)
				assert.Contains(t, err.Error(), "want $partition/<i>of<K>/<filter>", "says what is accepted")
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.filter, filter)
			assert.Equal(t, tc.i, i)
			assert.Equal(t, tc.k, k)
			assert.Equal(t, tc.ok, ok)
		})
	}
}

// Of is a pure function of the key (stable across processes), and spreads keys over every partition.
func TestOfSpreadsAndIsStable(t *testing.T) {
	assert.Equal(t, Of("devices/dev-001/telemetry", 4), Of("devices/dev-001/telemetry", 4))
	assert.Equal(t, uint32(0x811c9dc5), Hash(""), "FNV-1a offset basis: the hash is FNV-1a")
	seen := map[int]int{}
	for i := range 64 {
		seen[Of(Topic("k", i, 64), 4)]++
	}
	assert.Len(t, seen, 4, "64 keys reach all 4 partitions: %v", seen)
}

// Whatever the input, Parse either refuses it or returns the parts Topic builds it back from.
func FuzzParse(f *testing.F) {
	for _, s := range []string{"$partition/0of4/devices/+/telemetry", "$partition/3of4/$share/g/x", "$partition/4of4/x", "x", "$partition/", "$partition/1of2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, topic string) {
		filter, i, k, ok, err := Parse(topic)
		switch {
		case err != nil:
			require.ErrorIs(t, err, ErrInvalid)
		case ok:
			require.Equal(t, topic, Topic(filter, i, k))
			require.True(t, 0 <= i && i < k && k <= Max)
		default:
			require.Equal(t, topic, filter)
		}
	})
}
