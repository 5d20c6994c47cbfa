package broker

import (
	"fmt"
	"io"
	"sort"
	"sync/atomic"
)

// stats are the broker's counters, updated atomically.
type stats struct {
	Connections      atomic.Int64 // current
	ConnectionsTotal atomic.Int64
	PacketsIn        atomic.Int64
	MessagesIn       atomic.Int64
	MessagesOut      atomic.Int64
	Queued           atomic.Int64 // QoS 1/2 messages kept in sessions and groups (queued or in flight)
	DroppedQoS0      atomic.Int64 // QoS 0 messages dropped for a subscriber whose buffer was full
	refused          [256]atomic.Int64
}

func (s *stats) refuse(code byte) { s.refused[code].Add(1) }

// Stats is a snapshot of the counters.
type Stats struct {
	Connections      int64
	ConnectionsTotal int64
	PacketsIn        int64
	MessagesIn       int64
	MessagesOut      int64
	Queued           int64
	DroppedQoS0      int64
	// StoreCommits counts store transactions (one fsync each with a data directory): group commit
	// makes it much smaller than the number of stored messages.
	StoreCommits int64
	// StoreOps counts the changes those transactions applied (puts and deletes of records).
	StoreOps int64
	// Refused counts refusals and disconnections by MQTT reason code name.
	Refused map[string]int64
}

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
	}
	return fmt.Sprintf("0x%02x", c)
}

func (s *stats) snapshot() Stats {
	out := Stats{
		Connections: s.Connections.Load(), ConnectionsTotal: s.ConnectionsTotal.Load(),
		PacketsIn: s.PacketsIn.Load(), MessagesIn: s.MessagesIn.Load(), MessagesOut: s.MessagesOut.Load(),
		Queued: s.Queued.Load(), DroppedQoS0: s.DroppedQoS0.Load(), Refused: map[string]int64{},
	}
	for i := range s.refused {
		if n := s.refused[i].Load(); n > 0 {
			out.Refused[codeName(byte(i))] = n
		}
	}
	return out
}

// WriteText writes the counters in the Prometheus text format.
func (st Stats) WriteText(w io.Writer) error {
	lines := []string{
		fmt.Sprintf("mqbroker_connections %d", st.Connections),
		fmt.Sprintf("mqbroker_connections_total %d", st.ConnectionsTotal),
		fmt.Sprintf("mqbroker_packets_in_total %d", st.PacketsIn),
		fmt.Sprintf("mqbroker_messages_in_total %d", st.MessagesIn),
		fmt.Sprintf("mqbroker_messages_out_total %d", st.MessagesOut),
		fmt.Sprintf("mqbroker_messages_queued %d", st.Queued),
		fmt.Sprintf("mqbroker_qos0_dropped_total %d", st.DroppedQoS0),
		fmt.Sprintf("mqbroker_store_commits_total %d", st.StoreCommits),
	}
	reasons := make([]string, 0, len(st.Refused))
	for r := range st.Refused {
		reasons = append(reasons, r)
	}
	sort.Strings(reasons)
	for _, r := range reasons {
		lines = append(lines, fmt.Sprintf("mqbroker_refused_total{reason=%q} %d", r, st.Refused[r]))
	}
	for _, l := range lines {
		if _, err := fmt.Fprintln(w, l); err != nil {
			return err
		}
	}
	return nil
}
