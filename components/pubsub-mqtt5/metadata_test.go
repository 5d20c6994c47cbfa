package pubsubmqtt5

import (
	"os"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"gopkg.in/yaml.v3"

	"github.com/mqdapr/mqdapr/internal/mdparse"
	"github.com/mqdapr/mqdapr/internal/mqttconn"
)

type yamlField struct {
	Name          string   `yaml:"name"`
	Type          string   `yaml:"type"`
	Default       string   `yaml:"default"`
	AllowedValues []string `yaml:"allowedValues"`
	Sensitive     bool     `yaml:"sensitive"`
}

func loadMetadataYAML(t *testing.T) []yamlField {
	raw, err := os.ReadFile("metadata.yaml")
	require.NoError(t, err)
	var doc struct {
		Name     string      `yaml:"name"`
		Type     string      `yaml:"type"`
		Metadata []yamlField `yaml:"metadata"`
	}
	require.NoError(t, yaml.Unmarshal(raw, &doc))
	require.Equal(t, ComponentName, doc.Name)
	require.Equal(t, "pubsub", doc.Type)
	return doc.Metadata
}

// metadata.yaml and the Metadata struct describe the same keys, with the same defaults.
func TestMetadataYAMLInStepWithStruct(t *testing.T) {
	fields := loadMetadataYAML(t)
	var names []string
	for _, f := range fields {
		names = append(names, f.Name)
	}
	sort.Strings(names)
	assert.Equal(t, mdparse.Keys(&Metadata{}), names, "every struct key documented, nothing else")

	def := defaultMetadata()
	for _, f := range fields {
		if f.Default == "" {
			continue
		}
		t.Run(f.Name, func(t *testing.T) {
			switch f.Name {
			case "hostname":
				assert.Equal(t, mqttconn.AIODefaultHostname, f.Default)
				return
			case "tcpPort":
				assert.Equal(t, "18883", f.Default)
				return
			case "useTls":
				assert.Equal(t, "true", f.Default)
				return
			case "url":
				assert.Equal(t, mqttconn.DefaultURL, f.Default)
				return
			}
			// Decoding the documented default must give the struct's default.
			got := defaultMetadata()
			_, err := mdparse.Decode(map[string]string{f.Name: f.Default}, &got)
			require.NoError(t, err)
			assert.True(t, reflect.DeepEqual(def, got), "default of %s in metadata.yaml (%q) differs from the struct's", f.Name, f.Default)
		})
	}
	for _, f := range fields {
		if strings.Contains(strings.ToLower(f.Name), "password") || strings.HasSuffix(f.Name, "Key") {
			assert.True(t, f.Sensitive, "%s must be marked sensitive", f.Name)
		}
	}
}

// The allowed values in metadata.yaml are exactly what validate accepts.
func TestMetadataYAMLAllowedValuesMatchValidate(t *testing.T) {
	accept := func(k, v string) bool {
		props := map[string]string{k: v}
		if k == "ordering" && v == OrderingKey {
			props["orderingKeyFrom"] = "payload:deviceId" // ordering key needs its key
		}
		_, _, err := parseMetadata(props)
		return err == nil
	}
	for _, f := range loadMetadataYAML(t) {
		switch f.Name {
		case "qos", "ordering":
			for _, v := range f.AllowedValues {
				assert.True(t, accept(f.Name, v), "%s=%s", f.Name, v)
			}
		}
	}
	assert.False(t, accept("qos", "2"))
	assert.False(t, accept("ordering", "fifo"))
	assert.True(t, accept("receiveMaximum", "1"))
	assert.True(t, accept("receiveMaximum", "65535"))
	assert.False(t, accept("receiveMaximum", "0"))
	assert.True(t, accept("keepAlive", "1s"))
	assert.True(t, accept("keepAlive", "65535s"))
	assert.False(t, accept("keepAlive", time.Duration(65536*time.Second).String()))
}
