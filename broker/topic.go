package broker

import (
	"strings"
	"unicode/utf8"
)

// validUTF8 reports whether s is well-formed UTF-8 without U+0000 [MQTT-1.5.4-1] [MQTT-1.5.4-2].
func validUTF8(s string) bool {
	return utf8.ValidString(s) && !strings.ContainsRune(s, 0)
}

// validTopicName checks a PUBLISH topic: non-empty [MQTT-4.7.3-1], no wildcards [MQTT-3.3.2-2],
// valid UTF-8 [MQTT-4.7.3-2].
func validTopicName(t string) bool {
	return t != "" && len(t) <= 65535 && !strings.ContainsAny(t, "+#") && validUTF8(t)
}

// validTopicFilter checks a filter: '#' only last and alone in its level [MQTT-4.7.1-1], '+' alone in
// its level [MQTT-4.7.1-2].
func validTopicFilter(f string) bool {
	if f == "" || len(f) > 65535 || !validUTF8(f) {
		return false
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return false
		}
		if strings.Contains(l, "+") && l != "+" {
			return false
		}
	}
	return true
}

// parseShared splits "$share/<group>/<filter>". ok is false for a non-shared filter; valid is false
// for a malformed shared filter [MQTT-4.8.2-1] [MQTT-4.8.2-2].
func parseShared(f string) (group, filter string, ok, valid bool) {
	rest, found := strings.CutPrefix(f, "$share/")
	if !found {
		return "", f, false, true
	}
	group, filter, found = strings.Cut(rest, "/")
	if !found || group == "" || strings.ContainsAny(group, "+#") || !validTopicFilter(filter) {
		return "", "", true, false
	}
	return group, filter, true, true
}

// hasWildcard reports whether a filter contains '+' or '#'.
func hasWildcard(f string) bool { return strings.ContainsAny(f, "+#") }

// matchTopic reports whether topic matches filter. Topics starting with '$' are not matched by filters
// starting with a wildcard [MQTT-4.7.2-1].
func matchTopic(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true // '#' also matches the parent level [MQTT-4.7.1-2]
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore || !tmore {
			if !fmore && !tmore {
				return true
			}
			// "a/#" matches "a"
			return !tmore && fmore && frest == "#"
		}
		filter, topic = frest, trest
	}
}
