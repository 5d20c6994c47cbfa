package broker

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// ACL file format (mqbroker -acl-file; docs/architecture.md#authentication-and-authorization).
// One rule or section header a line; blank lines and lines starting with '#' are ignored; words
// are separated by white space.
//
//	user <name>          rules for the client that authenticated as <name> (a K8S-SAT client
//	                     is <namespace>/<service account>, broker/satauth)
//	client <pattern>     rules for the clients whose client ID matches <pattern> (exact, or a
//	                     prefix when it ends with '*')
//	anonymous            rules for clients without a user name
//	all                  rules for every client
//	topic read|write|readwrite|deny <filter>
//	                     read: SUBSCRIBE to filters within <filter> (and receive, retained
//	                     messages included); write: PUBLISH (and a will) on topics <filter> matches;
//	                     deny: neither, whatever else grants it (a subscription overlapping it, a
//	                     publish it matches)
//	key read|write|readwrite <prefix>
//	                     key-value store: read is GET and KEYNOTIFY, write is SET, DEL and VDEL, on
//	                     keys starting with <prefix> (a bare word, or a Go-quoted string such as
//	                     "a b" or "" for every key)
//
// In a filter or prefix, %u stands for the client's user name and %c for its client ID; a rule is
// skipped for a client whose substituted value is empty or holds '/', '+', '#' or a NUL (it would
// widen the rule). A client gets the union of the sections that apply to it: nothing is allowed
// that no rule grants, and a deny rule wins. daprd writes state keys as `<app id>||<key>` and the
// state.mqttkv component takes its ETag lock on `<key><lockSuffix>` (default "\x00mqdapr-lock"), so
// the prefix `<app id>||` covers an app's keys and their locks.

// ErrACLFile wraps every error about an ACL file's content.
var ErrACLFile = errors.New("ACL file")

type aclSectionKind uint8

const (
	secUser aclSectionKind = iota + 1
	secClient
	secAnonymous
	secAll
)

type aclRule struct {
	key          bool // a key rule; else a topic rule
	read, write  bool
	deny         bool
	pattern      string // filter or key prefix, with %u/%c
	substitution bool
}

type aclSection struct {
	kind  aclSectionKind
	name  string // user name, or client ID pattern
	rules []aclRule
}

// ACLFile is a parsed ACL file.
type ACLFile struct {
	Path     string
	sections []*aclSection
}

// LoadACLFile reads and parses the ACL file at path.
func LoadACLFile(path string) (*ACLFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrACLFile, err)
	}
	return ParseACLFile(path, data)
}

// ParseACLFile parses an ACL file's content; an error names path:line, what is wrong and what is
// accepted.
func ParseACLFile(path string, data []byte) (*ACLFile, error) {
	af := &ACLFile{Path: path}
	var cur *aclSection
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		bad := func(format string, args ...any) error {
			return fmt.Errorf("%w %s:%d: %s", ErrACLFile, path, n, fmt.Sprintf(format, args...))
		}
		words := strings.Fields(line)
		switch words[0] {
		case "user", "client":
			if len(words) != 2 {
				return nil, bad("want `%s <name>`", words[0])
			}
			s := &aclSection{kind: secUser, name: words[1]}
			if words[0] == "client" {
				s.kind = secClient
				if i := strings.IndexByte(s.name, '*'); i >= 0 && i != len(s.name)-1 {
					return nil, bad("client pattern %q: '*' is accepted only at the end (a prefix)", s.name)
				}
			}
			cur = s
			af.sections = append(af.sections, s)
		case "anonymous", "all":
			if len(words) != 1 {
				return nil, bad("`%s` takes no argument", words[0])
			}
			cur = &aclSection{kind: secAnonymous}
			if words[0] == "all" {
				cur.kind = secAll
			}
			af.sections = append(af.sections, cur)
		case "topic", "key":
			if cur == nil {
				return nil, bad("a rule before any section: start with `user <name>`, `client <pattern>`, `anonymous` or `all`")
			}
			r, err := parseACLRule(words[0], strings.TrimSpace(line[len(words[0]):]))
			if err != nil {
				return nil, bad("%v", err)
			}
			cur.rules = append(cur.rules, r)
		default:
			return nil, bad("unknown word %q: want user, client, anonymous, all, topic or key", words[0])
		}
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrACLFile, path, err)
	}
	return af, nil
}

func parseACLRule(kind, rest string) (aclRule, error) {
	access, arg, _ := strings.Cut(rest, " ")
	access = strings.TrimSpace(access)
	arg = strings.TrimSpace(arg)
	r := aclRule{key: kind == "key"}
	switch access {
	case "read":
		r.read = true
	case "write":
		r.write = true
	case "readwrite":
		r.read, r.write = true, true
	case "deny":
		if r.key {
			return r, errors.New("`key deny` is not accepted: keys are denied unless granted (want key read|write|readwrite <prefix>)")
		}
		r.deny = true
	default:
		return r, fmt.Errorf("access %q: want %s read|write|readwrite%s <%s>", access, kind, map[bool]string{false: "|deny", true: ""}[r.key], map[bool]string{false: "filter", true: "prefix"}[r.key])
	}
	if r.key {
		if strings.HasPrefix(arg, `"`) {
			s, err := strconv.Unquote(arg)
			if err != nil {
				return r, fmt.Errorf("key prefix %s: not a valid Go-quoted string", arg)
			}
			arg = s
		} else if arg == "" || strings.ContainsAny(arg, " \t") {
			return r, errors.New("want key read|write|readwrite <prefix>: one word, or a Go-quoted string (\"\" for every key)")
		}
	} else {
		if arg == "" || strings.ContainsAny(arg, " \t") {
			return r, errors.New("want topic read|write|readwrite|deny <filter>: one topic filter")
		}
		probe := strings.NewReplacer("%u", "u", "%c", "c").Replace(arg)
		if !validTopicFilter(probe) {
			return r, fmt.Errorf("topic filter %q is not valid (MQTT v5 §4.7: '#' last and alone in its level, '+' alone in its level)", arg)
		}
		if strings.HasPrefix(arg, "$share/") {
			return r, fmt.Errorf("topic filter %q: give the filter without $share/<group>/; shared subscriptions are judged by their filter", arg)
		}
	}
	r.pattern = arg
	r.substitution = strings.Contains(arg, "%u") || strings.Contains(arg, "%c")
	return r, nil
}

// applies reports whether section s applies to client c.
func (s *aclSection) applies(c Client) bool {
	switch s.kind {
	case secAll:
		return true
	case secAnonymous:
		return c.Username == ""
	case secUser:
		return c.Username != "" && c.Username == s.name
	case secClient:
		if p, ok := strings.CutSuffix(s.name, "*"); ok {
			return strings.HasPrefix(c.ID, p)
		}
		return c.ID == s.name
	}
	return false
}

// expand substitutes %u and %c (one allocation); ok is false when the rule does not apply to c.
func (r *aclRule) expand(c Client) (string, bool) {
	if !r.substitution {
		return r.pattern, true
	}
	p := r.pattern
	n := len(p)
	for i := 0; i+1 < len(p); i++ {
		if p[i] != '%' || (p[i+1] != 'u' && p[i+1] != 'c') {
			continue
		}
		v := c.Username
		if p[i+1] == 'c' {
			v = c.ID
		}
		if v == "" || strings.ContainsAny(v, "/+#\x00") {
			return "", false
		}
		n += len(v) - 2
		i++
	}
	var sb strings.Builder
	sb.Grow(n)
	for i := 0; i < len(p); i++ {
		if p[i] == '%' && i+1 < len(p) && (p[i+1] == 'u' || p[i+1] == 'c') {
			if p[i+1] == 'u' {
				sb.WriteString(c.Username)
			} else {
				sb.WriteString(c.ID)
			}
			i++
			continue
		}
		sb.WriteByte(p[i])
	}
	return sb.String(), true
}

// each calls f for every rule that applies to c, with its pattern expanded, until f returns true.
func (af *ACLFile) each(c Client, f func(r *aclRule, pattern string) bool) bool {
	for _, s := range af.sections {
		if !s.applies(c) {
			continue
		}
		for i := range s.rules {
			r := &s.rules[i]
			if p, ok := r.expand(c); ok && f(r, p) {
				return true
			}
		}
	}
	return false
}

// publishVerdict: denied names the deny rule; granted is whether a write rule matches.
func (af *ACLFile) publish(c Client, topic string) (granted bool, denied string) {
	af.each(c, func(r *aclRule, p string) bool {
		if r.key {
			return false
		}
		if r.deny && matchTopic(p, topic) {
			denied = p
			return true
		}
		if r.write && !granted && matchTopic(p, topic) {
			granted = true
		}
		return false
	})
	return granted && denied == "", denied
}

func (af *ACLFile) subscribe(c Client, filter string) (granted bool, denied string) {
	af.each(c, func(r *aclRule, p string) bool {
		if r.key {
			return false
		}
		if r.deny && filtersOverlap(p, filter) {
			denied = p
			return true
		}
		if r.read && !granted && filterCovers(p, filter) {
			granted = true
		}
		return false
	})
	return granted && denied == "", denied
}

func (af *ACLFile) key(c Client, key []byte, write bool) bool {
	return af.each(c, func(r *aclRule, p string) bool {
		return r.key && ((write && r.write) || (!write && r.read)) && bytes.HasPrefix(key, []byte(p))
	})
}

// filterCovers reports whether every topic matching filter f also matches grant g, so that a
// subscription on f receives nothing g does not grant (retained messages included).
func filterCovers(g, f string) bool {
	lg, lf := strings.Split(g, "/"), strings.Split(f, "/")
	for i := 0; ; i++ {
		endG, endF := i >= len(lg), i >= len(lf)
		if endG {
			return endF
		}
		if lg[i] == "#" {
			// a first-level wildcard matches no topic starting with '$' [MQTT-4.7.2-1]
			return !(i == 0 && !endF && strings.HasPrefix(lf[0], "$"))
		}
		if endF {
			return false // "a/b" is not covered by "a/b/c"; "a/#" covering "a" returned above
		}
		switch {
		case lf[i] == "#":
			return false
		case lg[i] == "+":
			if i == 0 && strings.HasPrefix(lf[0], "$") {
				return false
			}
		case lg[i] != lf[i]:
			return false
		}
	}
}
