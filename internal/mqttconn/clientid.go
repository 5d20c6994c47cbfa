package mqttconn

import (
	"fmt"
	"os"
	"strings"
)

// Kind separates the client ids of the two components of one replica, so that pub/sub and state
// never take over each other's session.
type Kind string

const (
	KindPubSub Kind = "ps"
	// KindPubSubPublish is pub/sub's publishing connection, beside the subscribing one.
	KindPubSubPublish Kind = "ps-pub"
	KindState         Kind = "kv"
)

// ClientID derives the MQTT client id: <consumerID>-<replica>-<kind>, where replica is the clientID
// metadata or else the host name (the pod name in Kubernetes).
//
// Several replicas of one app get the same consumerID from daprd, and two clients with one client
// id take each other's session over, so the replica part is what keeps them apart. It is stable
// across restarts of the same replica only when the host name is (a StatefulSet, or an explicit
// clientID); see the README for what a Deployment means for messages left in a departed session.
func (s *Settings) ResolveClientID(kind Kind) (string, error) {
	base := s.ConsumerID
	if base == "" {
		base = "mqdapr"
	}
	replica := s.ClientID
	if replica == "" {
		h, err := os.Hostname()
		if err != nil || h == "" {
			return "", fmt.Errorf("%w: no clientID given and the host name is unknown (%v); set clientID to a per-replica name", ErrSettings, err)
		}
		replica = h
	}
	id := base + "-" + replica + "-" + string(kind)
	if strings.ContainsAny(id, "+#/\x00") {
		return "", fmt.Errorf("%w: client id %q contains one of + # / or NUL; set consumerID/clientID to plain names", ErrSettings, id)
	}
	if len(id) > 65535 {
		return "", fmt.Errorf("%w: client id is %d bytes; want at most 65535", ErrSettings, len(id))
	}
	return id, nil
}
