package broker

import (
	"crypto/tls"
	"fmt"
	"net"
	"sync/atomic"
)

// stats are the broker's counters, updated atomically. They are read at scrape time (Stats);
// nothing on the hot path does more than one atomic add per event.
type stats struct {
	Connections      atomic.Int64 // current
	ConnectionsTotal atomic.Int64
	PacketsIn        atomic.Int64
	messagesIn       [3]atomic.Int64 // by QoS
	messagesOut      [3]atomic.Int64 // by QoS
	Queued           atomic.Int64    // QoS 1/2 messages kept in sessions and groups (queued or in flight)
	DroppedQoS0      atomic.Int64    // QoS 0 messages dropped for a subscriber whose buffer was full
	refused          [256]atomic.Int64
	conns            [2][numTransports]atomic.Int64 // current connections by protocol (0: v5, 1: 3.1.1) and transport
}

func (s *stats) refuse(code byte) { s.refused[code].Add(1) }

// in counts a message received (from a client, a will, a service or embedding code) at qos.
func (s *stats) in(qos byte) { s.messagesIn[min(qos, 2)].Add(1) }

// out counts a message sent to a subscriber at qos.
func (s *stats) out(qos byte) { s.messagesOut[min(qos, 2)].Add(1) }

// connected counts c in (delta 1) or out of (-1) the current connections, once CONNECT succeeded.
func (s *stats) connected(c *conn, delta int64) {
	s.Connections.Add(delta)
	if delta > 0 {
		s.ConnectionsTotal.Add(1)
	}
	v := 0
	if c.v3 {
		v = 1
	}
	s.conns[v][transportOf(c.nc)].Add(delta)
}

// Transports, the values of the transport label.
const (
	transportTCP = iota
	transportTLS
	transportWS
	transportWSS
	transportOther
	numTransports
)

// TransportNames are the transport label values, by index of Stats.ConnectionsBy.
var TransportNames = [numTransports]string{"tcp", "tls", "ws", "wss", "other"}

func transportOf(nc net.Conn) int {
	switch c := nc.(type) {
	case *net.TCPConn:
		return transportTCP
	case *tls.Conn:
		return transportTLS
	case *wsConn:
		if _, ok := c.ws.NetConn().(*tls.Conn); ok {
			return transportWSS
		}
		return transportWS
	}
	return transportOther
}

// Protocols are the protocol label values, by index of Stats.ConnectionsBy.
var Protocols = [2]string{"5", "3.1.1"}

// Stats is a snapshot of the counters.
type Stats struct {
	Connections      int64
	ConnectionsTotal int64
	// ConnectionsBy is Connections by protocol (index of Protocols) and transport (index of
	// TransportNames).
	ConnectionsBy [2][numTransports]int64
	// Sessions is the number of sessions, connected or kept for offline clients; Retained the
	// number of retained messages.
	Sessions, Retained int
	PacketsIn          int64
	MessagesIn         int64
	MessagesOut        int64
	// MessagesInByQoS and MessagesOutByQoS split MessagesIn and MessagesOut by QoS.
	MessagesInByQoS, MessagesOutByQoS [3]int64
	Queued                            int64
	// QueuedBytes approximates the memory the queued and in-flight messages hold (MaxQueuedBytes).
	QueuedBytes int64
	DroppedQoS0 int64
	// StoreCommits counts store transactions (one fsync each with a data directory): group commit
	// makes it much smaller than the number of stored messages.
	StoreCommits int64
	// StoreOps counts the changes those transactions applied (puts and deletes of records).
	StoreOps int64
	// StoreCommitSeconds is the time each of those transactions took (write and fsync).
	StoreCommitSeconds Histogram
	// Refused counts refusals and disconnections by MQTT reason code name.
	Refused map[string]int64
	// RefusedByCode is Refused by reason code.
	RefusedByCode map[byte]int64
}

// CodeName is the name of an MQTT reason code as the counters label it (e.g. "not_authorized" for
// 0x87), or its hexadecimal value for a code without a name here.
func CodeName(c byte) string { return codeName(c) }

// codeName is the counter label of a reason code.
func codeName(c byte) string {
	switch c {
	case CodeUnspecifiedError:
		return "unspecified_error"
	case CodeMalformedPacket:
		return "malformed_packet"
	case CodeProtocolError:
		return "protocol_error"
	case CodeImplementationSpecificError:
		return "implementation_specific_error"
	case CodeUnsupportedProtocolVersion:
		return "unsupported_protocol_version"
	case CodeClientIdentifierNotValid:
		return "client_id_not_valid"
	case CodeBadUserNameOrPassword:
		return "bad_username_or_password"
	case CodeNotAuthorized:
		return "not_authorized"
	case CodeServerUnavailable:
		return "server_unavailable"
	case CodeServerBusy:
		return "server_busy"
	case CodeBadAuthenticationMethod:
		return "bad_authentication_method"
	case CodeKeepAliveTimeout:
		return "keep_alive_timeout"
	case CodeSessionTakenOver:
		return "session_taken_over"
	case CodeTopicFilterInvalid:
		return "topic_filter_invalid"
	case CodeTopicNameInvalid:
		return "topic_name_invalid"
	case CodePacketIDNotFound:
		return "packet_id_not_found"
	case CodeReceiveMaximumExceeded:
		return "receive_maximum_exceeded"
	case CodeTopicAliasInvalid:
		return "topic_alias_invalid"
	case CodePacketTooLarge:
		return "packet_too_large"
	case CodeQuotaExceeded:
		return "quota_exceeded"
	case CodePayloadFormatInvalid:
		return "payload_format_invalid"
	case CodeMaximumConnectTime:
		return "connect_timeout"
	case CodeConnectionRateExceeded:
		return "connection_rate_exceeded"
	}
	return fmt.Sprintf("0x%02x", c)
}

func (s *stats) snapshot() Stats {
	out := Stats{
		Connections: s.Connections.Load(), ConnectionsTotal: s.ConnectionsTotal.Load(),
		PacketsIn: s.PacketsIn.Load(), Queued: s.Queued.Load(), DroppedQoS0: s.DroppedQoS0.Load(),
		Refused: map[string]int64{}, RefusedByCode: map[byte]int64{},
	}
	for q := range 3 {
		out.MessagesInByQoS[q] = s.messagesIn[q].Load()
		out.MessagesOutByQoS[q] = s.messagesOut[q].Load()
		out.MessagesIn += out.MessagesInByQoS[q]
		out.MessagesOut += out.MessagesOutByQoS[q]
	}
	for v := range s.conns {
		for t := range s.conns[v] {
			out.ConnectionsBy[v][t] = s.conns[v][t].Load()
		}
	}
	for i := range s.refused {
		if n := s.refused[i].Load(); n > 0 {
			out.Refused[codeName(byte(i))] = n
			out.RefusedByCode[byte(i)] = n
		}
	}
	return out
}
