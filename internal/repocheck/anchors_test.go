package repocheck

import (
	"reflect"
	"sort"
	"testing"
)

// TestGithubAnchor pins the anchor rules the citation check relies on to GitHub's: lower case,
// punctuation dropped, spaces to hyphens, link text kept.
func TestGithubAnchor(t *testing.T) {
	for _, tc := range []struct{ heading, want string }{
		{"Fencing tokens", "fencing-tokens"},
		{"Versions (HLC)", "versions-hlc"},
		{"Example: acquire and renew a lock", "example-acquire-and-renew-a-lock"},
		{"`SET`", "set"},
		{"RESP3 subset", "resp3-subset"},
		{"Where mqdapr and the AIO broker differ", "where-mqdapr-and-the-aio-broker-differ"},
		{"pubsub.mqttv5: what you get", "pubsubmqttv5-what-you-get"},
		{"Client identity, replicas, Deployment vs StatefulSet", "client-identity-replicas-deployment-vs-statefulset"},
		{"See [the docs](https://example.com/x)", "see-the-docs"},
		{"snake_case and a-b", "snake_case-and-a-b"},
	} {
		if got := githubAnchor(tc.heading); got != tc.want {
			t.Errorf("githubAnchor(%q) = %q, want %q", tc.heading, got, tc.want)
		}
	}
}

// TestHeadingAnchors checks heading recognition: ATX levels 1-6 with closing hashes, repeated
// headings numbered, and nothing taken from fenced code blocks or from "#tag" lines.
func TestHeadingAnchors(t *testing.T) {
	doc := "# Title\n\n## Part ##\n\ntext\n\n## Part\n\n```sh\n# not a heading\n```\n\n#hashtag\n" +
		"~~~\n## fenced either\n~~~\n    ## indented code\n###### Deep\n"
	var got []string
	for a := range headingAnchors([]byte(doc)) {
		got = append(got, a)
	}
	sort.Strings(got)
	want := []string{"deep", "part", "part-1", "title"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("headingAnchors = %q, want %q", got, want)
	}
}

// TestCitationPatterns checks which lines the two checks flag, so that a pattern change that stops
// catching a reference (or starts flagging legitimate paths) fails here.
func TestCitationPatterns(t *testing.T) {
	for _, tc := range []struct {
		line    string
		outside bool
	}{
		{"// see /work/shared/spec/state-store-protocol.md §1.4", true},
		{"see `../shared/notes/dapr-pluggable.md`", true},
		{"as in ../../shared/spec", true},
		{"copied from /root/.cache/x", true},
		{"in /home/alice/src", true},
		{"// (spec §1.6)", true},
		{"`~/.cache/mqdapr/tools` and /tmp/dapr-components-sockets", false},
		{"/var/run/secrets/tokens/mqtt-client-token", false},
		{"MQTT v5 §3.3.1.3", false},
		{"a shared subscription, $share/group/topic", false},
		{"docs/state-store-protocol.md#fencing-tokens", false},
	} {
		hit := false
		for _, p := range outsideRefs {
			hit = hit || p.re.MatchString(tc.line)
		}
		if hit != tc.outside {
			t.Errorf("%q: flagged %v, want %v", tc.line, hit, tc.outside)
		}
	}
	for _, tc := range []struct {
		line string
		want []string // target#anchor of each citation
	}{
		{"// (docs/state-store-protocol.md#topics, #mqtt-properties)", []string{"docs/state-store-protocol.md#topics"}},
		{"[x](../../docs/architecture.md#parts)", []string{"../../docs/architecture.md#parts"}},
		{"<https://learn.microsoft.com/a/b.md#c>", nil},
		{"docs/state-store-protocol.md#<section>", nil},
	} {
		var got []string
		for _, m := range docCitation.FindAllStringSubmatch(tc.line, -1) {
			got = append(got, m[1]+"#"+m[2])
		}
		if !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: citations %q, want %q", tc.line, got, tc.want)
		}
	}
	if m := moreAnchors.FindStringSubmatch(", #mqtt-properties)"); m == nil || m[1] != "mqtt-properties" {
		t.Errorf("moreAnchors did not match a following anchor: %q", m)
	}
}
