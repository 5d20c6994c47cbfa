package broker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"

	"github.com/eclipse/paho.golang/packets"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
)

var errInjected = errors.New("injected store fault")

// faultyBackend is the log store with faults on demand (the real one cannot fail when asked):
// while fail is set every transaction fails, with failNext set the next one does; with hold set,
// the next transaction signals entered and waits for release before it runs.
type faultyBackend struct {
	backend
	fail     atomic.Bool
	failNext atomic.Bool
	hold     atomic.Bool
	entered  chan struct{}
	release  chan struct{}
}

func (f *faultyBackend) apply(ops []op) error {
	if f.hold.CompareAndSwap(true, false) {
		f.entered <- struct{}{}
		<-f.release
	}
	if f.fail.Load() || f.failNext.CompareAndSwap(true, false) {
		return errInjected
	}
	return f.backend.apply(ops)
}

// startFaulty starts a broker with a data directory whose store fails on demand.
func startFaulty(t *testing.T, mutate func(*Options)) (*Broker, *faultyBackend) {
	t.Helper()
	o := NewDefaultOptions()
	o.Addr, o.DataDir = "127.0.0.1:0", t.TempDir()
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	if mutate != nil {
		mutate(o)
	}
	b, err := New(o)
	require.NoError(t, err)
	fb := &faultyBackend{entered: make(chan struct{}, 1), release: make(chan struct{})}
	b.openStore = func(dir string) (backend, error) {
		be, err := openLog(dir)
		if err != nil {
			return nil, err
		}
		fb.backend = be
		return fb, nil
	}
	require.NoError(t, b.Start())
	t.Cleanup(func() { require.NoError(t, b.Close()) })
	return b, fb
}

func (r *raw) publishQoS2(t testing.TB, pid uint16, topic, payload string, dup bool) {
	t.Helper()
	p := &packets.Publish{QoS: 2, PacketID: pid, Topic: topic, Payload: []byte(payload), Duplicate: dup, Properties: &packets.Properties{}}
	r.send(t, p.ToControlPacket())
}

func (r *raw) readPubrec(t testing.TB) *packets.Pubrec {
	t.Helper()
	cp := r.read(t)
	require.NotNil(t, cp, "connection closed")
	rec, ok := cp.Content.(*packets.Pubrec)
	require.True(t, ok, "got %s, want PUBREC", cp.PacketType())
	return rec
}

// completeQoS2 sends PUBREL for pid and expects PUBCOMP 0x00.
func (r *raw) completeQoS2(t testing.TB, pid uint16) {
	t.Helper()
	rel := packets.NewControlPacket(packets.PUBREL)
	rel.Content.(*packets.Pubrel).PacketID = pid
	r.send(t, rel)
	cp := r.read(t)
	require.NotNil(t, cp, "connection closed")
	comp, ok := cp.Content.(*packets.Pubcomp)
	require.True(t, ok, "got %s, want PUBCOMP", cp.PacketType())
	require.Equal(t, CodeSuccess, comp.ReasonCode)
}

// waitPayload reads c's messages until one carries payload (earlier ones may be copies of
// refused publishes, which the broker still delivers from memory).
func (c *client) waitPayload(t testing.TB, payload string) {
	t.Helper()
	for string(c.next(t).Payload) != payload {
	}
}

// A QoS 2 PUBLISH refused because its commit failed (PUBREC 0x80) frees its packet id
// [MQTT-4.3.3-9]: before the fix the id stayed recorded, so the publisher's next message with that
// id was taken for a duplicate, acknowledged with PUBREC 0x00 and never routed.
func TestStoreFaultQoS2RefusalFreesPacketID(t *testing.T) {
	b, fb := startFaulty(t, nil)
	sub := dialClient(t, b, "sub", withExpiry(60))
	sub.subscribe(t, "t", 2)
	pub := dialRaw(t, b)
	require.Equal(t, CodeSuccess, pub.connect(t, "pub", true, 60).ReasonCode)

	fb.fail.Store(true)
	pub.publishQoS2(t, 7, "t", "first", false)
	require.Equal(t, CodeUnspecifiedError, pub.readPubrec(t).ReasonCode)
	fb.fail.Store(false)
	pub.publishQoS2(t, 7, "t", "second", false) // a new message with the freed id
	require.Equal(t, CodeSuccess, pub.readPubrec(t).ReasonCode)
	pub.completeQoS2(t, 7)
	sub.waitPayload(t, "second")
}

// A retransmission (after a reconnect) of a QoS 2 PUBLISH whose first copy's commit then fails
// must not get PUBREC 0x00: before the fix the duplicate was acknowledged as soon as any later
// commit ended, so the publisher took as delivered a message the broker had refused.
func TestStoreFaultQoS2DuplicateOfRefusedPublish(t *testing.T) {
	b, fb := startFaulty(t, nil)
	sub := dialClient(t, b, "sub", withExpiry(60))
	sub.subscribe(t, "t", 2)
	pub := dialRaw(t, b)
	require.Equal(t, CodeSuccess, pub.connect(t, "pub", true, 60).ReasonCode)

	fb.failNext.Store(true)
	fb.hold.Store(true)
	pub.publishQoS2(t, 9, "t", "first", false)
	<-fb.entered // the first copy's commit is under way (and will fail)
	pub2 := dialRaw(t, b)
	require.True(t, pub2.connect(t, "pub", false, 60).SessionPresent) // takes the session over
	pub2.publishQoS2(t, 9, "t", "first", true)
	// Packets of a connection are handled in order: the PINGRESP means the retransmission has been
	// taken for a duplicate of the pending first copy.
	pub2.send(t, packets.NewControlPacket(packets.PINGREQ))
	cp := pub2.read(t)
	require.NotNil(t, cp)
	require.Equal(t, packets.PINGRESP, cp.Type)
	close(fb.release) // the first copy's commit fails; the following ones succeed
	rec := pub2.readPubrec(t)
	require.Equal(t, uint16(9), rec.PacketID)
	require.GreaterOrEqual(t, rec.ReasonCode, CodeUnspecifiedError, "PUBREC 0x%02x for a publish the broker refused", rec.ReasonCode)
}

// A SUBSCRIBE whose commit fails is refused (SUBACK 0x80) and not kept: before the fix the SUBACK
// granted a subscription that was not durable (and, after a restart, gone).
func TestStoreFaultSubackRefused(t *testing.T) {
	b, fb := startFaulty(t, nil)
	pub := dialClient(t, b, "pub")
	_, err := pub.Publish(ctxT(t), &paho.Publish{Topic: "a/r", QoS: 1, Retain: true, Payload: []byte("retained")})
	require.NoError(t, err)
	sub := dialClient(t, b, "sub", withExpiry(60))
	sub.subscribe(t, "keep", 1)

	fb.fail.Store(true)
	sa, err := sub.Subscribe(ctxT(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "a/#", QoS: 1}, {Topic: "keep", QoS: 0}}})
	require.Error(t, err)
	require.Equal(t, []byte{CodeUnspecifiedError, CodeUnspecifiedError}, sa.Reasons)
	fb.fail.Store(false)

	require.Equal(t, CodeNoMatchingSubscribers, pub.publish(t, "a/x", 1, "x").ReasonCode, "the refused subscription was kept")
	// "keep" is back to QoS 1 (the refused SUBSCRIBE asked for 0).
	pub.publish(t, "keep", 1, "k")
	m := sub.next(t)
	require.Equal(t, "k", string(m.Payload), "retained message of a refused subscription delivered")
	require.Equal(t, byte(1), m.QoS)
}

// testService consumes publishes on svc/ (a Service the broker calls in place of routing).
type testService struct{ calls atomic.Int64 }

func (s *testService) Match(topic string) bool { return len(topic) > 4 && topic[:4] == "svc/" }
func (s *testService) Handle(_ context.Context, _ string, _ *Message, _ Publisher) error {
	s.calls.Add(1)
	return nil
}

// The service path's PUBREC waits for the packet id's commit and reports its failure: before the
// fix it answered PUBREC 0x00 when the commit failed, and the publisher's next message with that id
// was taken for a duplicate and never reached the service.
func TestStoreFaultServicePubrec(t *testing.T) {
	svc := &testService{}
	b, fb := startFaulty(t, func(o *Options) { o.Services = []Service{svc} })
	pub := dialRaw(t, b)
	require.Equal(t, CodeSuccess, pub.connect(t, "pub", true, 60).ReasonCode)

	fb.fail.Store(true)
	pub.publishQoS2(t, 3, "svc/x", "first", false)
	require.Equal(t, CodeUnspecifiedError, pub.readPubrec(t).ReasonCode)
	fb.fail.Store(false)
	pub.publishQoS2(t, 3, "svc/x", "second", false)
	require.Equal(t, CodeSuccess, pub.readPubrec(t).ReasonCode)
	pub.completeQoS2(t, 3)
	require.Equal(t, int64(2), svc.calls.Load(), "the second message did not reach the service")
}

// A PUBREL whose release of the packet id fails to commit must not be answered PUBCOMP: the id
// stays stored, so after a restart the publisher's next QoS 2 message with that id would be taken
// for a duplicate and never routed. The broker keeps the id and ends the connection; the client
// sends the PUBREL again when it reconnects, and then the id is released, on disk too.
func TestStoreFaultPubrelKeepsPacketID(t *testing.T) {
	b, fb := startFaulty(t, nil)
	dir := b.opts.DataDir
	dialClient(t, b, "sub", withExpiry(60)).subscribe(t, "t", 2)
	pub := dialRaw(t, b)
	require.Equal(t, CodeSuccess, pub.connect(t, "pub", true, 60).ReasonCode)
	pub.publishQoS2(t, 5, "t", "first", false)
	require.Equal(t, CodeSuccess, pub.readPubrec(t).ReasonCode)

	fb.fail.Store(true)
	rel := packets.NewControlPacket(packets.PUBREL)
	rel.Content.(*packets.Pubrel).PacketID = 5
	pub.send(t, rel)
	for {
		cp := pub.read(t)
		require.NotNil(t, cp, "connection closed without DISCONNECT")
		require.NotEqual(t, packets.PUBCOMP, cp.Type, "PUBCOMP for a release that is not durable")
		if d, ok := cp.Content.(*packets.Disconnect); ok {
			require.Equal(t, CodeUnspecifiedError, d.ReasonCode)
			break
		}
	}
	fb.fail.Store(false)

	// The client resends its PUBREL on the next connection; now the release is durable.
	again := dialRaw(t, b)
	require.True(t, again.connect(t, "pub", false, 60).SessionPresent)
	again.completeQoS2(t, 5)

	// After a restart the id is free: a new message with it is routed.
	require.NoError(t, b.Close())
	o := NewDefaultOptions()
	o.Addr, o.DataDir = "127.0.0.1:0", dir
	o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	b2, err := New(o)
	require.NoError(t, err)
	require.NoError(t, b2.Start())
	t.Cleanup(func() { _ = b2.Close() })
	sub := dialClient(t, b2, "sub", withExpiry(60))
	sub.subscribe(t, "t", 2)
	pub2 := dialRaw(t, b2)
	require.True(t, pub2.connect(t, "pub", false, 60).SessionPresent)
	pub2.publishQoS2(t, 5, "t", "second", false)
	require.Equal(t, CodeSuccess, pub2.readPubrec(t).ReasonCode)
	pub2.completeQoS2(t, 5)
	sub.waitPayload(t, "second")
}
