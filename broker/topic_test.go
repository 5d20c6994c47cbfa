package broker

import "testing"

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
