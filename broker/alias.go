package broker

import (
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// Topic aliases (MQTT v5 §3.3.2.3.4) and the Server Keep Alive (§3.2.2.3.14): what CONNECT and
// CONNACK settle about them, and the per-connection alias tables. A mapping lives as long as its
// network connection and is never carried to another [MQTT-3.3.2-7].

// topicAliases are one connection's alias tables.
type topicAliases struct {
	// in maps the client's aliases to topics; read and written by the reader goroutine only.
	in map[uint16]string
	// out assigns the broker's aliases; max is set before CONNACK is queued, the rest is used by
	// the writer goroutine only (aliases must follow the order PUBLISHes take on the wire).
	out aliasOut
}

// aliasOut assigns aliases to the topics of outgoing PUBLISHes: the first max topics get 1..max;
// after that, aliases are reassigned round robin, each reassignment sending the new topic with
// the alias (which replaces the client's mapping, MQTT v5 §3.3.4).
type aliasOut struct {
	max     uint16 // min(Options.TopicAliasOut, the client's Topic Alias Maximum); 0: none
	byTopic map[string]uint16
	topics  []string // topics[a-1] is alias a's topic
	next    uint16   // the last alias reassigned
}

// connectLimits applies the CONNECT's keep alive and Topic Alias Maximum and fills the CONNACK
// properties that answer them. It runs on the reader goroutine before CONNACK is queued.
func (c *conn) connectLimits(p *packets.Connect, ack *packets.Properties) {
	ka := p.KeepAlive
	// 3.1.1 has no Server Keep Alive: its client keeps its own value, so the cap is v5 only.
	if m := c.b.opts.MaxKeepAlive; m > 0 && !c.v3 && (ka == 0 || ka > m) {
		// The client must use the Server Keep Alive instead of its own [MQTT-3.2.2-21]; the broker
		// holds it to that value (1.5 times, [MQTT-3.1.2-22]). Without it the client's stands
		// [MQTT-3.2.2-22].
		ka = m
		ack.ServerKeepAlive = &ka
	}
	c.keepAlive = time.Duration(ka) * time.Second
	if m := c.b.opts.TopicAliasMaximum; m > 0 {
		ack.TopicAliasMaximum = &m // absent means 0: no alias accepted (MQTT v5 §3.2.2.3.8)
	}
	if p.Properties != nil && p.Properties.TopicAliasMaximum != nil {
		c.aliases.out.max = min(c.b.opts.TopicAliasOut, *p.Properties.TopicAliasMaximum) // [MQTT-3.3.2-11]
	}
}

// resolveAlias applies the Topic Alias of a PUBLISH from the client (MQTT v5 §3.3.4): a topic with
// an alias sets (or replaces) the mapping, an empty topic takes the mapped one. The alias property
// is then removed: aliases never leave the connection. The error closes the connection.
func (c *conn) resolveAlias(p *packets.Publish) error {
	if p.Properties == nil || p.Properties.TopicAlias == nil {
		if p.Topic == "" {
			// MQTT v5 §3.3.2.1: a zero-length Topic Name without a Topic Alias is a Protocol Error.
			return reasonf(CodeProtocolError, "PUBLISH with an empty topic name and no topic alias")
		}
		return nil
	}
	alias, max := *p.Properties.TopicAlias, c.b.opts.TopicAliasMaximum
	if alias == 0 || alias > max {
		// [MQTT-3.3.2-8] (never 0) [MQTT-3.3.2-9] (never above the CONNACK's maximum): 0x94, §3.3.4.
		return reasonf(CodeTopicAliasInvalid, "topic alias %d: accepted are 1 to %d (Topic Alias Maximum in CONNACK)", alias, max)
	}
	p.Properties.TopicAlias = nil
	if p.Topic == "" {
		t, ok := c.aliases.in[alias]
		if !ok {
			// MQTT v5 §3.3.4: an empty Topic Name with an alias that has no mapping yet is a
			// Protocol Error.
			return reasonf(CodeProtocolError, "topic alias %d used with an empty topic before a PUBLISH defined it", alias)
		}
		p.Topic = t
		return nil
	}
	if c.aliases.in == nil {
		c.aliases.in = make(map[uint16]string, max)
	}
	c.aliases.in[alias] = p.Topic // every alias 1..max is accepted [MQTT-3.3.2-12]
	return nil
}

// aliasOutgoing gives an outgoing PUBLISH a topic alias when the connection assigns them: a topic
// already mapped goes as the alias alone, a new one with the alias that maps it. Called by the
// writer for each packet in wire order.
func (c *conn) aliasOutgoing(cp *packets.ControlPacket) {
	// Only PUBLISHes are looked at: they are queued after CONNACK, so after a.max was set (AUTH
	// packets are written while CONNECT is still being handled).
	p := publishOf(cp)
	a := &c.aliases.out
	if p == nil || a.max == 0 || p.Topic == "" {
		return
	}
	if p.Properties == nil {
		p.Properties = &packets.Properties{}
	}
	if id, ok := a.byTopic[p.Topic]; ok {
		p.Properties.TopicAlias = &id
		p.Topic = ""
		return
	}
	if a.byTopic == nil {
		a.byTopic = map[string]uint16{}
	}
	var id uint16
	if len(a.topics) < int(a.max) {
		a.topics = append(a.topics, p.Topic)
		id = uint16(len(a.topics))
	} else {
		a.next = a.next%a.max + 1
		id = a.next
		delete(a.byTopic, a.topics[id-1])
		a.topics[id-1] = p.Topic
	}
	a.byTopic[p.Topic] = id
	p.Properties.TopicAlias = &id // [MQTT-3.3.2-11]: id <= a.max <= the client's maximum
}
