package broker

import (
	"context"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
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

// ACL is the Authorizer mqbroker configures: the deny rules of the command line (Deny, applied
// to every client) over the rules of an ACL file (aclfile.go). Without a file every topic and key
// is allowed that Deny does not refuse; with one, nothing is allowed that it does not grant (deny by
// default). The file can be replaced while the broker runs (SetFile, a reload); each decision reads
// the file current at that moment, so a reload applies to the next PUBLISH, SUBSCRIBE or key-value
// command of every client (subscriptions already granted are kept).
//
// It also decides key-level access to the key-value store (AuthorizeKey, kvservice.KeyAuthorizer).
// Refusals are counted (Refused) and logged at info level with the client ID, user name and the
// topic, filter or key, never a password or payload.
type ACL struct {
	Deny *TopicRules
	file atomic.Pointer[ACLFile]
	log  *slog.Logger

	refusedPublish, refusedSubscribe, refusedKey atomic.Int64

	refusals logLimiter // the refusal lines
}

// refusalLogsPerSecond bounds the refusal lines: a client publishing in a loop to a topic it may
// not use must not flood the log (every refusal is still counted).
const refusalLogsPerSecond = 20

func (a *ACL) logRefusal(msg string, args ...any) {
	a.refusals.log(a.log, "authorization refusals not logged (rate limit)", msg, args...)
}

// logLimiter lets refusalLogsPerSecond lines through per second and summarises the others in one
// line when the next second's first one is logged. The zero value uses time.Now.
type logLimiter struct {
	now        func() time.Time // tests replace it
	mu         sync.Mutex
	window     time.Time // start of the current second
	logged     int       // lines logged in it
	suppressed int       // lines not logged since the last summary
}

// log writes msg with args to log unless this second's lines are used up; summary names what
// the summarised lines were.
func (l *logLimiter) log(log *slog.Logger, summary, msg string, args ...any) {
	l.mu.Lock()
	now := time.Now()
	if l.now != nil {
		now = l.now()
	}
	if now.Sub(l.window) >= time.Second {
		if l.suppressed > 0 {
			log.Info(summary, "count", l.suppressed)
		}
		l.window, l.logged, l.suppressed = now, 0, 0
	}
	ok := l.logged < refusalLogsPerSecond
	if ok {
		l.logged++
	} else {
		l.suppressed++
	}
	l.mu.Unlock()
	if ok {
		log.Info(msg, args...)
	}
}

// NewACL returns an ACL over deny (nil: none) and file (nil: no file). log nil discards.
func NewACL(deny *TopicRules, file *ACLFile, log *slog.Logger) *ACL {
	if deny == nil {
		deny = &TopicRules{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	a := &ACL{Deny: deny, log: log}
	a.file.Store(file)
	return a
}

// SetFile replaces the ACL file's rules (a reload).
func (a *ACL) SetFile(f *ACLFile) { a.file.Store(f) }

// Refused returns the refusals so far: publishes (and wills), subscriptions, key-value commands.
func (a *ACL) Refused() (publish, subscribe, key int64) {
	return a.refusedPublish.Load(), a.refusedSubscribe.Load(), a.refusedKey.Load()
}

// AuthorizePublish implements Authorizer.
func (a *ACL) AuthorizePublish(ctx context.Context, c Client, topic string) error {
	err := a.Deny.AuthorizePublish(ctx, c, topic)
	if f := a.file.Load(); err == nil && f != nil {
		if ok, denied := f.publish(c, topic); !ok {
			if denied != "" {
				err = reasonf(CodeNotAuthorized, "topic %q matches the deny rule %q of %s", topic, denied, f.Path)
			} else {
				err = reasonf(CodeNotAuthorized, "no rule of %s grants publishing on %q", f.Path, topic)
			}
		}
	}
	if err != nil {
		a.refusedPublish.Add(1)
		a.logRefusal("publish not authorized", "client", c.ID, "user", c.Username, "topic", topic, "why", err.Error())
	}
	return err
}

// AuthorizeSubscribe implements Authorizer. A shared subscription is judged by its filter.
func (a *ACL) AuthorizeSubscribe(ctx context.Context, c Client, filter string) error {
	err := a.Deny.AuthorizeSubscribe(ctx, c, filter)
	if f := a.file.Load(); err == nil && f != nil {
		_, tf, _, _ := parseShared(filter)
		if ok, denied := f.subscribe(c, tf); !ok {
			if denied != "" {
				err = reasonf(CodeNotAuthorized, "subscription %q overlaps the deny rule %q of %s", filter, denied, f.Path)
			} else {
				err = reasonf(CodeNotAuthorized, "no rule of %s grants subscribing to %q", f.Path, filter)
			}
		}
	}
	if err != nil {
		a.refusedSubscribe.Add(1)
		a.logRefusal("subscribe not authorized", "client", c.ID, "user", c.Username, "filter", filter, "why", err.Error())
	}
	return err
}

// AuthorizeKey decides a key-value command on key (write: SET, DEL, VDEL; else GET, KEYNOTIFY).
// Without an ACL file every key is allowed.
func (a *ACL) AuthorizeKey(c Client, key []byte, write bool) error {
	f := a.file.Load()
	if f == nil || f.key(c, key, write) {
		return nil
	}
	a.refusedKey.Add(1)
	access := "read"
	if write {
		access = "write"
	}
	a.logRefusal("key access not authorized", "client", c.ID, "user", c.Username, "key", strconv.QuoteToASCII(string(key)), "access", access)
	return reasonf(CodeNotAuthorized, "no rule of %s grants %s on key %q", f.Path, access, key)
}
