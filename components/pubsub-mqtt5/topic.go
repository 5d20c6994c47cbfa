package pubsubmqtt5

import (
	"fmt"
	"github.com/mqdapr/mqdapr/internal/mqttconn"
	"strings"
	"unicode/utf8"
)

const maxTopicLen = 65535

// validateTopicName checks a topic a message is published to [MQTT-3.3.2-2], [MQTT-4.7.3-1..3].
// Topics starting with $ are reserved for the broker [MQTT-4.7.2-1].
func validateTopicName(t string) error {
	if err := validateUTF8(t); err != nil {
		return err
	}
	if strings.ContainsAny(t, "+#") {
		return fmt.Errorf("%w: %q: wildcards + and # are allowed only in subscriptions", ErrInvalidTopic, t)
	}
	if strings.HasPrefix(t, "$") {
		return fmt.Errorf("%w: %q: topics starting with $ are reserved for the broker", ErrInvalidTopic, t)
	}
	return nil
}

// validateTopicFilter checks a subscription filter [MQTT-4.7.1-1], [MQTT-4.7.1-2].
func validateTopicFilter(f string) error {
	if err := validateUTF8(f); err != nil {
		return err
	}
	levels := strings.Split(f, "/")
	for i, l := range levels {
		if strings.Contains(l, "#") && (l != "#" || i != len(levels)-1) {
			return fmt.Errorf("%w: %q: # must be a whole level and the last one", ErrInvalidTopic, f)
		}
		if strings.Contains(l, "+") && l != "+" {
			return fmt.Errorf("%w: %q: + must be a whole level", ErrInvalidTopic, f)
		}
	}
	return nil
}

func validateUTF8(t string) error {
	switch {
	case t == "":
		return fmt.Errorf("%w: empty topic", ErrInvalidTopic)
	case len(t) > maxTopicLen:
		return fmt.Errorf("%w: topic is %d bytes; want at most %d", ErrInvalidTopic, len(t), maxTopicLen)
	case !utf8.ValidString(t):
		return fmt.Errorf("%w: %q is not valid UTF-8", ErrInvalidTopic, t)
	case strings.ContainsRune(t, 0):
		return fmt.Errorf("%w: %q contains NUL", ErrInvalidTopic, t)
	}
	return nil
}

// validateShareName checks a shared-subscription group name [MQTT-4.8.2-1], [MQTT-4.8.2-2].
func validateShareName(g string) error {
	if g == "" || strings.ContainsAny(g, "/+#") || !utf8.ValidString(g) {
		return fmt.Errorf("%q: want a non-empty name without / + or #", g)
	}
	return nil
}

// splitShared splits "$share/<group>/<filter>" into group and filter; ok is false for a plain filter.
func splitShared(f string) (group, filter string, ok bool, err error) {
	rest, found := strings.CutPrefix(f, "$share/")
	if !found {
		return "", f, false, nil
	}
	group, filter, found = strings.Cut(rest, "/")
	if !found || filter == "" {
		return "", "", false, fmt.Errorf("%w: %q: want $share/<group>/<filter>", ErrInvalidTopic, f)
	}
	if err := validateShareName(group); err != nil {
		return "", "", false, fmt.Errorf("%w: %q: share name %w", ErrInvalidTopic, f, err)
	}
	return group, filter, true, nil
}

// topicMatches reports whether topic matches filter [MQTT-4.7]. Wildcards at the first level do
// not match topics starting with $ [MQTT-4.7.2-1].
func topicMatches(filter, topic string) bool {
	if strings.HasPrefix(topic, "$") && (strings.HasPrefix(filter, "+") || strings.HasPrefix(filter, "#")) {
		return false
	}
	for {
		fl, frest, fmore := strings.Cut(filter, "/")
		if fl == "#" {
			return true
		}
		tl, trest, tmore := strings.Cut(topic, "/")
		if fl != "+" && fl != tl {
			return false
		}
		if !fmore || !tmore {
			// "a/#" matches "a" as well [MQTT-4.7.1-2].
			return fmore == tmore || (fmore && frest == "#")
		}
		filter, topic = frest, trest
	}
}

func reasonString(code byte) string { return mqttconn.ReasonString(code) }
