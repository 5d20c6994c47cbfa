package kvservice

import (
	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/statestore"
)

// toRequest maps a routed PUBLISH onto the engine's request. Slices are shared: the engine copies
// what it keeps and the broker never modifies a routed Message.
func toRequest(clientID string, conn broker.ConnID, m *broker.Message) statestore.Request {
	req := statestore.Request{
		ClientID: clientID,
		Conn:     uint64(conn),
		Topic:    m.Topic,
		QoS:      m.QoS,
		Payload:  m.Payload,
		Properties: statestore.Properties{
			ResponseTopic:   m.ResponseTopic,
			CorrelationData: m.CorrelationData,
			ContentType:     m.ContentType,
		},
	}
	if len(m.UserProperties) > 0 {
		req.Properties.User = make([]statestore.UserProperty, len(m.UserProperties))
		for i, u := range m.UserProperties {
			req.Properties.User[i] = statestore.UserProperty{Key: u.Key, Value: u.Value}
		}
	}
	return req
}

// fromMessage maps a response or notification onto a broker message (no expiry, not retained).
func fromMessage(m statestore.Message) *broker.Message {
	out := &broker.Message{
		Topic:           m.Topic,
		QoS:             m.QoS,
		Payload:         m.Payload,
		ContentType:     m.Properties.ContentType,
		CorrelationData: m.Properties.CorrelationData,
	}
	if len(m.Properties.User) > 0 {
		out.UserProperties = make([]broker.UserProperty, len(m.Properties.User))
		for i, u := range m.Properties.User {
			out.UserProperties[i] = broker.UserProperty{Key: u.Key, Value: u.Value}
		}
	}
	return out
}
