package testutil

import (
	"errors"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"strings"
	"testing"
)

var yamlName = regexp.MustCompile(`(?m)^\s*- name: *([A-Za-z0-9]+)\s*$`)

// MetadataYAMLKeys lists the metadata keys a component's metadata.yaml declares (its "- name:"
// entries), for MetadataProps.
func MetadataYAMLKeys(tb testing.TB, path string) []string {
	tb.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}
	var keys []string
	for _, m := range yamlName.FindAllStringSubmatch(string(b), -1) {
		keys = append(keys, m[1])
	}
	if len(keys) == 0 {
		tb.Fatalf("%s declares no metadata", path)
	}
	return keys
}

// MetadataProps turns fuzz input into Component metadata: one "key=value" per line; a key that is
// a number N names keys[N % len(keys)], so that the fuzzer reaches the component's real keys (and
// their cross-checks) without having to guess their spelling. Lines without "=" are skipped.
func MetadataProps(data string, keys []string) map[string]string {
	props := map[string]string{}
	for _, line := range strings.Split(data, "\n") {
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		if n, err := strconv.Atoi(k); err == nil && n >= 0 && len(keys) > 0 {
			k = keys[n%len(keys)]
		}
		props[k] = v
	}
	return props
}

// CheckMetadataParse holds a component's metadata parser to its contract on any input: it never
// panics (the caller's fuzz target would report it); an error wraps invalid (the component's
// ErrInvalidMetadata) and says something beyond it; a success is deterministic (the same props
// parse to the same value) and its unknown keys are keys of props.
func CheckMetadataParse[M any](t *testing.T, props map[string]string, invalid error, parse func(map[string]string) (M, []string, error)) {
	t.Helper()
	md, unknown, err := parse(props)
	if err != nil {
		if !errors.Is(err, invalid) {
			t.Fatalf("error %q does not wrap %q", err, invalid)
		}
		if strings.TrimSpace(strings.TrimPrefix(err.Error(), invalid.Error()+":")) == "" {
			t.Fatalf("error %q names nothing beyond %q", err, invalid)
		}
		return
	}
	again, _, err := parse(props)
	if err != nil || !reflect.DeepEqual(md, again) {
		t.Fatalf("the same metadata parsed twice: %+v, then %+v (%v)", md, again, err)
	}
	for _, k := range unknown {
		if _, ok := props[k]; !ok {
			t.Fatalf("unknown key %q is not in the metadata %v", k, props)
		}
	}
}
