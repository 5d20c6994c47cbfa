package connector

import (
	"fmt"
	"strings"
)

// matchTopic reports whether topic matches the MQTT filter (+ one level, # the rest) and returns
// the topic level at the filter's first + ("" if none). [MQTT-4.7.1-1..3]
func matchTopic(filter, topic string) (bool, string) {
	fl := strings.Split(filter, "/")
	tl := strings.Split(topic, "/")
	plus := ""
	seenPlus := false
	for i, f := range fl {
		if f == "#" {
			return true, plus
		}
		if i >= len(tl) {
			return false, ""
		}
		switch f {
		case "+":
			if !seenPlus {
				plus, seenPlus = tl[i], true
			}
		default:
			if f != tl[i] {
				return false, ""
			}
		}
	}
	if len(fl) != len(tl) {
		return false, ""
	}
	return true, plus
}

// validFilter checks a subscription filter: non-empty levels rules of MQTT for + and #.
func validFilter(filter string) error {
	if filter == "" {
		return fmt.Errorf("empty topic filter")
	}
	levels := strings.Split(filter, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return fmt.Errorf("topic filter %q: # must be a whole last level", filter)
		}
		if strings.Contains(l, "+") && l != "+" {
			return fmt.Errorf("topic filter %q: + must be a whole level", filter)
		}
	}
	if strings.HasPrefix(filter, "$share/") {
		return fmt.Errorf("topic filter %q: give the shared group separately, not as $share/", filter)
	}
	return nil
}
