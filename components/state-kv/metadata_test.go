package statekv

import (
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/mqdapr/mqdapr/internal/mdparse"
	"github.com/mqdapr/mqdapr/internal/mqttconn"
)

type yamlField struct {
	Name      string `yaml:"name"`
	Default   string `yaml:"default"`
	Sensitive bool   `yaml:"sensitive"`
}

// metadata.yaml and the Metadata struct describe the same keys, with the same defaults.
func TestMetadataYAMLInStepWithStruct(t *testing.T) {
	raw, err := os.ReadFile("metadata.yaml")
	require.NoError(t, err)
	var doc struct {
		Name         string      `yaml:"name"`
		Type         string      `yaml:"type"`
		Capabilities []string    `yaml:"capabilities"`
		Metadata     []yamlField `yaml:"metadata"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &doc))
	require.Equal(t, ComponentName, doc.Name)
	require.Equal(t, "state", doc.Type)
	require.Equal(t, []string{"etag", "ttl"}, doc.Capabilities)

	var names []string
	for _, f := range doc.Metadata {
		names = append(names, f.Name)
	}
	sort.Strings(names)
	assert.Equal(t, mdparse.Keys(&Metadata{}), names, "every struct key documented, nothing else")

	def := defaultMetadata()
	for _, f := range doc.Metadata {
		if f.Default == "" {
			continue
		}
		t.Run(f.Name, func(t *testing.T) {
			switch f.Name {
			case "hostname":
				assert.Equal(t, mqttconn.AIODefaultHostname, f.Default)
				return
			case "tcpPort", "useTls":
				return // AIO defaults, applied only when AIO's names are used
			case "url":
				assert.Equal(t, mqttconn.DefaultURL, f.Default)
				return
			}
			got := defaultMetadata()
			_, err := mdparse.Decode(map[string]string{f.Name: f.Default}, &got)
			require.NoError(t, err)
			assert.True(t, reflect.DeepEqual(def, got), "default of %s in metadata.yaml (%q) differs from the struct's", f.Name, f.Default)
		})
	}
	for _, f := range doc.Metadata {
		if strings.Contains(strings.ToLower(f.Name), "password") || f.Name == "clientKey" {
			assert.True(t, f.Sensitive, "%s must be marked sensitive", f.Name)
		}
	}
}

// The ranges documented in metadata.yaml are what validate accepts.
func TestMetadataRanges(t *testing.T) {
	accept := func(kv ...string) bool {
		p := map[string]string{}
		for i := 0; i+1 < len(kv); i += 2 {
			p[kv[i]] = kv[i+1]
		}
		_, _, err := parseMetadata(p)
		return err == nil
	}
	for _, c := range []struct {
		ok bool
		kv []string
	}{
		{true, []string{"requestTimeout", "100ms"}}, {true, []string{"requestTimeout", "1h"}},
		{false, []string{"requestTimeout", "99ms"}}, {false, []string{"requestTimeout", "61m"}},
		{true, []string{"bulkParallelism", "1"}}, {true, []string{"bulkParallelism", "1024"}},
		{false, []string{"bulkParallelism", "0"}}, {false, []string{"bulkParallelism", "1025"}},
		{true, []string{"lockTTL", "1s", "lockMargin", "500ms"}}, {true, []string{"lockTTL", "1h"}},
		{false, []string{"lockTTL", "999ms", "lockMargin", "500ms"}}, {false, []string{"lockTTL", "61m"}},
		{false, []string{"lockMargin", "0s"}}, {false, []string{"lockMargin", "10s"}},
		{true, []string{"maxValueBytes", "0"}}, {false, []string{"maxValueBytes", "-1"}},
		{true, []string{"persistent", "false"}}, {false, []string{"persistent", "nope"}},
		{false, []string{"lockSuffix", ""}},
	} {
		assert.Equal(t, c.ok, accept(c.kv...), "%v", c.kv)
	}
}
