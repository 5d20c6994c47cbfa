package mqttconn

import (
	"io"

	"github.com/eclipse/paho.golang/paho/store/memory"
)

// noResendStore is the packet store of paho's session state on a connection without a session
// (Options.NoSession): paho's store keeps a serialised copy of every QoS 1/2 packet in flight, to
// send it again after a reconnection whose CONNACK says Session Present; with Clean Start 1 the
// broker never says so [MQTT-3.2.2-2], so the copy is never read, and serialising it cost every
// request a PUBLISH's worth of encoding and memory. Nothing is ever listed for a resend, which is
// also what a request-once client wants.
type noResendStore struct{}

func (noResendStore) Put(uint16, byte, io.WriterTo) error { return nil }
func (noResendStore) Get(uint16) (io.ReadCloser, error)   { return nil, memory.ErrNotInStore }
func (noResendStore) Delete(uint16) error                 { return nil }
func (noResendStore) Quarantine(uint16) error             { return nil }
func (noResendStore) List() ([]uint16, error)             { return nil, nil }
func (noResendStore) Reset() error                        { return nil }
