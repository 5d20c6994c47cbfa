package broker

import (
	"encoding/binary"
	"encoding/json"
	"time"

	"github.com/eclipse/paho.golang/packets"
)

// Entry states.
const (
	stQueued     byte = iota // not sent yet
	stSent                   // PUBLISH sent, waiting for PUBACK/PUBREC
	stPubrelSent             // PUBREL sent, waiting for PUBCOMP
)

// entry is one QoS 1/2 message for one subscription of a session or for a shared group.
type entry struct {
	seq       uint64
	msg       *Message
	qos       byte
	retain    bool
	subID     int
	moreIDs   []int // further subscription identifiers (OverlapSingle), sent after subID
	state     byte
	pid       uint16
	committed bool     // durable (or needs no durability): may be sent
	resend    bool     // in flight from an earlier connection, not yet resent on this one
	group     *group   // set when delivered through a shared subscription
	sess      *session // the session holding the entry, nil while in a group queue
	// groupKept: a group entry held by a non-persistent session stays stored under its group's key
	// until acknowledged, so a crash cannot lose it (durable mode only).
	groupKept bool
}

func (e *entry) encode() []byte {
	b := make([]byte, 0, 24+int(entrySize(e.msg))+len(e.msg.from))
	b = append(b, 1, e.state, byte(e.pid>>8), byte(e.pid), e.qos, 0)
	if e.retain {
		b[5] = 1
	}
	if len(e.moreIDs) > 0 {
		b[5] |= 2 // the further identifiers follow subID
	}
	b = binary.AppendUvarint(b, uint64(e.subID))
	if len(e.moreIDs) > 0 {
		b = binary.AppendUvarint(b, uint64(len(e.moreIDs)))
		for _, id := range e.moreIDs {
			b = binary.AppendUvarint(b, uint64(id))
		}
	}
	g := ""
	if e.group != nil {
		g = e.group.name + "\x00" + e.group.filter
	}
	b = appendString(b, g)
	return e.msg.appendTo(b)
}

// decodeEntry decodes a stored entry; groupKey is its shared-subscription group (name 0 filter) or "".
func decodeEntry(seq uint64, v []byte) (e *entry, groupKey string, err error) {
	if len(v) < 6 || v[0] != 1 {
		return nil, "", errCorrupt
	}
	e = &entry{seq: seq, state: v[1], pid: uint16(v[2])<<8 | uint16(v[3]), qos: v[4], retain: v[5]&1 != 0, committed: true}
	d := &decoder{b: v[6:]}
	e.subID = int(d.uvarint())
	if v[5]&2 != 0 {
		n := d.uvarint()
		if n > uint64(len(d.b)) {
			return nil, "", errCorrupt
		}
		for range n {
			e.moreIDs = append(e.moreIDs, int(d.uvarint()))
		}
	}
	groupKey = d.string()
	e.msg = d.message()
	return e, groupKey, d.err
}

// subscription is one subscription of a session; shared ones also belong to a group.
type subscription struct {
	sess    *session
	Filter  string // without the $share prefix
	Group   string // shared-subscription group name, empty if not shared
	QoS     byte
	NoLocal bool
	RAP     bool // retain as published
	SubID   int
}

// will is a connection's will message.
type will struct {
	msg   *Message
	delay time.Duration
}

// session is the server side of an MQTT session. All fields are guarded by Broker.mu.
type session struct {
	id         string
	expiry     uint32 // session expiry interval, seconds; 0xFFFFFFFF never
	persistent bool   // recorded in the store (expiry > 0 and a data directory)
	v3         bool   // its client speaks MQTT 3.1.1 (last connection; stored)
	conn       *conn
	offlineAt  time.Time
	subs       map[string]*subscription // by full filter as subscribed (incl. $share/...)
	inflight   []*entry                 // sent, in send order
	resending  bool                     // some in-flight entries wait to be resent (entry.resend)
	queued     []*entry                 // not sent, in order; queued[qhead:] are live
	qhead      int
	pids       map[uint16]*entry // outbound packet id -> in-flight entry
	nextPID    uint16
	inbound    map[uint16]bool // QoS 2 packet ids received, PUBREL not yet received [MQTT-4.3.3-9]
	will       *will
	willAt     time.Time // when a delayed will is due; zero if none pending

	// owner is "u:" + the user name the session was created or last resumed under when an
	// Authenticator is set (stored); "" when unknown (no Authenticator, or a record written before
	// owners were kept). Another user's client may not take the session over (connect).
	owner string
}

func newSession(id string) *session {
	return &session{id: id, subs: map[string]*subscription{}, pids: map[uint16]*entry{}, inbound: map[uint16]bool{}}
}

func (s *session) ownerKey() string { return string(ownerSession) + s.id }

func (s *session) queueLen() int { return len(s.inflight) + len(s.queued) - s.qhead }

func (s *session) pushQueued(e *entry) { s.queued = append(s.queued, e) }

func (s *session) popQueued() *entry {
	e := s.queued[s.qhead]
	s.queued[s.qhead] = nil
	s.qhead++
	if s.qhead > 1024 && s.qhead*2 > len(s.queued) {
		s.queued = append([]*entry(nil), s.queued[s.qhead:]...)
		s.qhead = 0
	}
	return e
}

func (s *session) peekQueued() *entry {
	if s.qhead < len(s.queued) {
		return s.queued[s.qhead]
	}
	return nil
}

// allocPID returns a packet id not in use by an in-flight entry [MQTT-2.2.1-4].
func (s *session) allocPID() uint16 {
	for {
		s.nextPID++
		if s.nextPID == 0 {
			s.nextPID = 1
		}
		if _, used := s.pids[s.nextPID]; !used {
			return s.nextPID
		}
	}
}

func (s *session) removeInflight(e *entry) {
	for i, x := range s.inflight {
		if x == e {
			s.inflight = append(s.inflight[:i], s.inflight[i+1:]...)
			break
		}
	}
	delete(s.pids, e.pid)
}

// sessionRecord is the stored form of a session.
type sessionRecord struct {
	Expiry    uint32          `json:"expiry"`
	OfflineAt int64           `json:"offline_at,omitempty"`
	Subs      []*subscription `json:"subs"`
	NextPID   uint16          `json:"next_pid"`
	// Will is the will message not yet published (encoded like a stored message), so a crash or
	// restart does not lose it; WillDelay is its delay.
	Will      []byte        `json:"will,omitempty"`
	WillDelay time.Duration `json:"will_delay,omitempty"`
	// V3: the session's client speaks MQTT 3.1.1, so messages routed to it after a restart and
	// before it reconnects follow 3.1.1's rules (one copy for overlapping subscriptions).
	V3 bool `json:"v3,omitempty"`
	// Owner: session.owner.
	Owner string `json:"owner,omitempty"`
}

// record encodes s for the store. OfflineAt is written only while s has no connection: a session
// that is connected when the broker stops (or crashes) went offline then, which restore takes as
// the start time, so its expiry and delayed will count from the restart.
func (s *session) record() []byte {
	r := sessionRecord{Expiry: s.expiry, NextPID: s.nextPID, V3: s.v3, Owner: s.owner}
	if s.conn == nil && !s.offlineAt.IsZero() {
		r.OfflineAt = s.offlineAt.UnixNano()
	}
	for _, sub := range s.subs {
		r.Subs = append(r.Subs, sub)
	}
	if s.will != nil {
		r.Will, r.WillDelay = s.will.msg.appendTo(nil), s.will.delay
	}
	b, _ := json.Marshal(r)
	return b
}

// resendPacket is the packet that resends an in-flight entry on reconnect: PUBLISH with DUP set
// [MQTT-4.4.0-1] [MQTT-3.3.1-1] or PUBREL [MQTT-4.4.0-2].
func (e *entry) resendPacket(now time.Time) *packets.ControlPacket {
	if e.state == stPubrelSent {
		cp := packets.NewControlPacket(packets.PUBREL)
		cp.Content.(*packets.Pubrel).PacketID = e.pid
		return cp
	}
	return e.publishPacket(now, true)
}
