package statekv

import (
	"testing"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

// Any Component metadata (keys reached by number are metadata.yaml's) is accepted or refused with ErrInvalidMetadata and a reason, never a
// panic, and the same metadata always parses the same way (testutil.CheckMetadataParse).
func FuzzParseMetadata(f *testing.F) {
	for _, seed := range []string{
		"url=mqtt://127.0.0.1:1883",
		"url=mqtts://broker:8883\npersistent=true\ncaCert=x",
		"0=tcp://h:1\n21=50ms\n25=0s",
		"url=mqtt://h:1883\nlockTTL=10s\nlockMargin=20s\nlockSuffix=",
		"url=mqtt://h:1883\nbulkParallelism=0\nmaxValueBytes=-1",
		"hostname=h\ntcpPort=-1\nkeyPrefix=name\nrequestTimeout=2h",
	} {
		f.Add(seed)
	}
	keys := testutil.MetadataYAMLKeys(f, "metadata.yaml")
	f.Fuzz(func(t *testing.T, data string) {
		testutil.CheckMetadataParse(t, testutil.MetadataProps(data, keys), ErrInvalidMetadata, ParseMetadata)
	})
}
