package broker

import (
	"context"
	"fmt"
	"strings"
)

// TopicRules is an Authorizer that refuses by topic filter, the same for every client: the
// command line's -deny-subscribe and -deny-publish. A refusal carries 0x87 (Not authorized): in
// SUBACK for that filter alone [MQTT-3.9.3-1] (MQTT v5 §3.9.3 0x87), in PUBACK or PUBREC for a
// QoS 1 or 2 PUBLISH (MQTT v5 §3.4.2.1, §3.5.2.1; a QoS 0 one is dropped [MQTT-3.3.5-2]), in
// CONNACK for a will on a denied topic (see Authorizer). Per-client rules belong to a fuller
// Authorizer (an ACL file); TopicRules is the rule set such an Authorizer can start from.
type TopicRules struct {
	// DenySubscribe refuses a SUBSCRIBE filter that could receive a message on a topic one of
	// these filters matches ("#" overlaps every rule not starting with '$'). A shared
	// subscription ($share/<group>/<filter>) is judged by its filter.
	DenySubscribe []string
	// DenyPublish refuses a PUBLISH (and a will) whose topic one of these filters matches.
	DenyPublish []string
}

// NewTopicRules returns rules refusing the given filters, or an error naming the first invalid one.
func NewTopicRules(denySubscribe, denyPublish []string) (*TopicRules, error) {
	for _, f := range append(append([]string(nil), denySubscribe...), denyPublish...) {
		if !validTopicFilter(f) {
			return nil, fmt.Errorf("%w: deny rule %q is not a valid topic filter (MQTT v5 §4.7)", ErrInvalidOptions, f)
		}
		if strings.HasPrefix(f, "$share/") {
			return nil, fmt.Errorf("%w: deny rule %q: give the topic filter without $share/<group>/; it applies to shared subscriptions too", ErrInvalidOptions, f)
		}
	}
	return &TopicRules{DenySubscribe: denySubscribe, DenyPublish: denyPublish}, nil
}

// AuthorizeSubscribe implements Authorizer.
func (r *TopicRules) AuthorizeSubscribe(_ context.Context, _ Client, filter string) error {
	_, f, _, _ := parseShared(filter)
	for _, d := range r.DenySubscribe {
		if filtersOverlap(d, f) {
			return reasonf(CodeNotAuthorized, "subscription %q overlaps the denied filter %q", filter, d)
		}
	}
	return nil
}

// AuthorizePublish implements Authorizer.
func (r *TopicRules) AuthorizePublish(_ context.Context, _ Client, topic string) error {
	for _, d := range r.DenyPublish {
		if matchTopic(d, topic) {
			return reasonf(CodeNotAuthorized, "topic %q matches the denied filter %q", topic, d)
		}
	}
	return nil
}

// filtersOverlap reports whether some topic name matches both filters. A wildcard in the first
// level matches no topic starting with '$' [MQTT-4.7.2-1]; '#' also matches its parent level
// [MQTT-4.7.1-2].
func filtersOverlap(a, b string) bool {
	la, lb := strings.Split(a, "/"), strings.Split(b, "/")
	wild := func(l string) bool { return l == "+" || l == "#" }
	if (strings.HasPrefix(la[0], "$") && wild(lb[0])) || (strings.HasPrefix(lb[0], "$") && wild(la[0])) {
		return false
	}
	for i := 0; ; i++ {
		endA, endB := i >= len(la), i >= len(lb)
		if (!endA && la[i] == "#") || (!endB && lb[i] == "#") {
			return true
		}
		if endA || endB {
			return endA && endB
		}
		if la[i] != "+" && lb[i] != "+" && la[i] != lb[i] {
			return false
		}
	}
}
