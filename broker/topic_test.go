package broker

import (
	"strings"
	"testing"
)

func TestMatchTopic(t *testing.T) {
	cases := []struct {
		filter, topic string
		want          bool
	}{
		{"a/b", "a/b", true},
		{"a/+", "a/b", true},
		{"a/+", "a/b/c", false},
		{"a/#", "a/b/c", true},
		{"a/#", "a", true}, // [MQTT-4.7.1-2]
		{"#", "a/b", true},
		{"+/+", "a/b", true},
		{"+", "a/b", false},
		{"#", "$SYS/x", false}, // [MQTT-4.7.2-1]
		{"+/x", "$SYS/x", false},
		{"$SYS/#", "$SYS/x", true},
		{"a/b", "a/c", false},
		{"a//b", "a//b", true},
		{"a/+/b", "a//b", true},
	}
	for _, c := range cases {
		if got := matchTopic(c.filter, c.topic); got != c.want {
			t.Errorf("matchTopic(%q, %q) = %v, want %v", c.filter, c.topic, got, c.want)
		}
	}
}

func TestValidFilters(t *testing.T) {
	for f, want := range map[string]bool{"a/#": true, "a/#/b": false, "a+": false, "+/b": true, "": false, "a/\x00": false} {
		if validTopicFilter(f) != want {
			t.Errorf("validTopicFilter(%q) != %v", f, want)
		}
	}
	if _, _, ok, valid := parseShared("$share/g/a/+"); !ok || !valid {
		t.Error("valid shared filter refused")
	}
	if _, _, ok, valid := parseShared("$share//a"); !ok || valid {
		t.Error("empty group accepted") // [MQTT-4.8.2-1]
	}
	if _, _, ok, valid := parseShared("$share/g"); !ok || valid {
		t.Error("shared filter without filter accepted") // [MQTT-4.8.2-2]
	}
}

// The trie index agrees with matchTopic on random filters and topics, and prunes what is dropped.
func TestIndexMatchesLikeMatchTopic(t *testing.T) {
	levels := []string{"a", "b", "$x", "", "+", "#"}
	rnd := uint64(42)
	next := func(n int) int { rnd = rnd*6364136223846793005 + 1442695040888963407; return int(rnd>>33) % n }
	gen := func(wild bool) string {
		var parts []string
		for i, k := 0, 1+next(4); i < k; i++ {
			l := levels[next(len(levels))]
			if !wild && (l == "+" || l == "#") {
				l = "c"
			}
			parts = append(parts, l)
			if l == "#" {
				break
			}
		}
		return strings.Join(parts, "/")
	}
	ix := newIndex()
	var filters []string
	for range 200 {
		f := gen(true)
		if !validTopicFilter(f) {
			continue
		}
		if ix.get(f, false) == nil {
			filters = append(filters, f)
		}
		fs := ix.get(f, true)
		fs.subs = append(fs.subs, &subscription{Filter: f})
	}
	matches := 0
	for range 2000 {
		topic := gen(false)
		got := map[string]bool{}
		ix.match(topic, func(fs *filterSubs) { got[fs.subs[0].Filter] = true; matches++ })
		for _, f := range filters {
			if got[f] != matchTopic(f, topic) {
				t.Fatalf("filter %q topic %q: index %v, matchTopic %v", f, topic, got[f], matchTopic(f, topic))
			}
		}
	}
	if matches < 500 {
		t.Fatalf("only %d matches: the generator does not exercise the index", matches)
	}
	for _, f := range filters {
		ix.get(f, false).subs = nil
		ix.drop(f)
	}
	if len(ix.root.children) != 0 {
		t.Fatalf("index not pruned: %d children left", len(ix.root.children))
	}
}
