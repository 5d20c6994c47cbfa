package pubsubmqtt5

import (
	"testing"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

// Any Component metadata (keys reached by number are metadata.yaml's) is accepted or refused with ErrInvalidMetadata and a reason, never a
// panic, and the same metadata always parses the same way (testutil.CheckMetadataParse).
func FuzzParseMetadata(f *testing.F) {
	for _, seed := range []string{
		"url=mqtt://127.0.0.1:1883",
		"url=mqtts://broker:8883\nqos=0\nretain=true\ncaCert=x",
		"0=tcp://h:1\n22=0\n23=0s",
		"url=mqtt://h:1883\nordering=key\norderingKeyFrom=payload:device.id",
		"url=mqtt://h:1883\nordering=key\norderingKeyFrom=property:",
		"url=mqtt://h:1883\nmaxDeliveryAttempts=-1\ndeadLetterTopic=dl/#",
		"hostname=h\ntcpPort=99999\nkeepAlive=1h\nsessionExpiry=-1s",
		"url=mqtt://h:1883\nsharedSubscriptionGroup=a/b\nreceiveMaximum=65536",
	} {
		f.Add(seed)
	}
	keys := testutil.MetadataYAMLKeys(f, "metadata.yaml")
	f.Fuzz(func(t *testing.T, data string) {
		testutil.CheckMetadataParse(t, testutil.MetadataProps(data, keys), ErrInvalidMetadata, ParseMetadata)
	})
}
