package statekv

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/dapr/components-contrib/state"
	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/internal/hlc"
	"github.com/mqdapr/mqdapr/internal/resp3"
)

// fakeStore is a raw MQTT client subscribed to the request topic of a broker without a key-value
// service: it sees the requests byte for byte and answers them as the test says.
type fakeStore struct {
	*paho.Client
	reqs chan *paho.Publish
}

func dialFakeStore(t *testing.T, kb *kvBroker) *fakeStore {
	t.Helper()
	nc, err := net.Dial("tcp", kb.b.Addrs()[0])
	require.NoError(t, err)
	f := &fakeStore{reqs: make(chan *paho.Publish, 16)}
	f.Client = paho.NewClient(paho.ClientConfig{
		ClientID: "fake-store",
		Conn:     nc,
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			f.reqs <- pr.Packet
			return true, nil
		}},
		OnClientError: func(error) {},
	})
	ctx, cancel := context.WithTimeout(t.Context(), waitFor)
	defer cancel()
	_, err = f.Connect(ctx, &paho.Connect{ClientID: "fake-store", KeepAlive: 30, CleanStart: true})
	require.NoError(t, err)
	_, err = f.Subscribe(ctx, &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: requestTopic, QoS: 1}}})
	require.NoError(t, err)
	t.Cleanup(func() {
		_ = f.Disconnect(&paho.Disconnect{ReasonCode: 0})
		nc.Close()
		<-f.Done()
	})
	return f
}

func (f *fakeStore) next(t *testing.T) *paho.Publish {
	t.Helper()
	select {
	case p := <-f.reqs:
		return p
	case <-time.After(waitFor):
		t.Fatal("no request reached the fake store")
		return nil
	}
}

func (f *fakeStore) answer(t *testing.T, req *paho.Publish, payload string, user ...string) {
	t.Helper()
	props := &paho.PublishProperties{CorrelationData: req.Properties.CorrelationData, ContentType: contentType}
	for i := 0; i+1 < len(user); i += 2 {
		props.User.Add(user[i], user[i+1])
	}
	_, err := f.Publish(t.Context(), &paho.Publish{Topic: req.Properties.ResponseTopic, QoS: 1, Payload: []byte(payload), Properties: props})
	require.NoError(t, err)
}

// The requests are byte-exact (docs/state-store-protocol.md#mqtt-properties, #commands): QoS 1,
// RESP3 array, response topic under the client id, 16 bytes of correlation data, message expiry,
// content type, __ts, __protVer, __srcId, aio-persistence; responses without __stat are refused.
func TestWireRequest(t *testing.T) {
	kb := startBroker(t, false)
	f := dialFakeStore(t, kb)
	s := newStore(t, props(kb.url(), "r1"))

	done := make(chan error, 1)
	go func() {
		done <- s.Set(t.Context(), &state.SetRequest{Key: "lock", Value: []byte("client1"),
			Options: state.SetStateOption{Concurrency: state.FirstWrite}, Metadata: map[string]string{"ttlInSeconds": "10"}})
	}()
	req := f.next(t)
	require.Equal(t, byte(1), req.QoS)
	require.Equal(t, "*6\r\n$3\r\nSET\r\n$4\r\nlock\r\n$7\r\nclient1\r\n$2\r\nNX\r\n$2\r\nPX\r\n$5\r\n10000\r\n", string(req.Payload))
	require.Equal(t, "clients/app-r1-kv/services/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke/response", req.Properties.ResponseTopic)
	require.Len(t, req.Properties.CorrelationData, 16)
	require.Equal(t, "application/octet-stream", req.Properties.ContentType)
	require.NotNil(t, req.Properties.MessageExpiry)
	require.Equal(t, uint32(5), *req.Properties.MessageExpiry)
	ts, err := hlc.Parse(req.Properties.User.Get("__ts"))
	require.NoError(t, err)
	require.Equal(t, "app-r1-kv", ts.NodeID)
	require.Equal(t, "1.0", req.Properties.User.Get("__protVer"))
	require.Equal(t, "app-r1-kv", req.Properties.User.Get("__srcId"))
	require.Equal(t, "true", req.Properties.User.Get("aio-persistence"))
	require.Empty(t, req.Properties.User.Get("__ft"))
	f.answer(t, req, "+OK\r\n", "__stat", "200", "__ts", "001696374425000:00001:store", "__protVer", "1.0")
	require.NoError(t, <-done)

	// GET carries no aio-persistence; a response without __stat is an error.
	go func() {
		_, err := s.Get(t.Context(), &state.GetRequest{Key: "lock"})
		done <- err
	}()
	req = f.next(t)
	require.Equal(t, "*2\r\n$3\r\nGET\r\n$4\r\nlock\r\n", string(req.Payload))
	require.Empty(t, req.Properties.User.Get("aio-persistence"))
	f.answer(t, req, "$-1\r\n")
	require.ErrorIs(t, <-done, ErrUnexpectedResponse)

	// An unknown -ERR text is passed on.
	go func() { done <- s.Set(t.Context(), &state.SetRequest{Key: "lock", Value: []byte("x")}) }()
	req = f.next(t)
	require.Equal(t, "*3\r\n$3\r\nSET\r\n$4\r\nlock\r\n$1\r\nx\r\n", string(req.Payload))
	f.answer(t, req, "-ERR not authorized\r\n", "__stat", "200")
	err = <-done
	require.ErrorIs(t, err, ErrStoreError)
	require.ErrorContains(t, err, "not authorized")
}

// persistent: false leaves aio-persistence out.
func TestWireNoPersistence(t *testing.T) {
	kb := startBroker(t, false)
	f := dialFakeStore(t, kb)
	s := newStore(t, props(kb.url(), "r1", "persistent", "false"))
	done := make(chan error, 1)
	go func() { done <- s.Set(t.Context(), &state.SetRequest{Key: "k", Value: []byte("v")}) }()
	req := f.next(t)
	require.Equal(t, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n", string(req.Payload))
	require.Empty(t, req.Properties.User.Get("aio-persistence"))
	f.answer(t, req, "+OK\r\n", "__stat", "200", "__ts", "001696374425000:00001:store")
	require.NoError(t, <-done)
}

// A writer whose lease passed to another writer that wrote is refused by the key's fencing token:
// its late SET cannot overwrite the newer write.
func TestStaleLeaseIsFenced(t *testing.T) {
	kb := startBroker(t, true)
	p := props(kb.url(), "a", "lockTTL", "1s", "lockMargin", "500ms")
	a := newStore(t, p)
	b := newStore(t, props(kb.url(), "b"))
	set(t, a, "k", "v0")
	etag := get(t, a, "k").ETag

	ra, md, err := a.state()
	require.NoError(t, err)
	stale, err := acquire(t.Context(), ra, md, "k")
	require.NoError(t, err)
	// Wait for the lease to expire in the store, then B takes the lock and writes.
	require.Eventually(t, func() bool {
		_, _, found, err := ra.get(t.Context(), "k"+md.LockSuffix)
		return err == nil && !found
	}, 5*time.Second, 20*time.Millisecond)
	require.NoError(t, b.Set(t.Context(), &state.SetRequest{Key: "k", Value: []byte("b"), ETag: etag}))

	// The component does not send it any more (request.sendBy); forced past that guard, the store refuses it.
	_, err = ra.set(t.Context(), "k", []byte("a-late"), always, 0, &stale, true)
	require.ErrorIs(t, err, ErrLeaseExpired)
	forced := stale
	forced.safeUntil = time.Now().Add(time.Minute)
	res, err := ra.set(t.Context(), "k", []byte("a-late"), always, 0, &forced, true)
	require.NoError(t, err)
	require.False(t, res.applied)
	require.Equal(t, msgFencingLower, res.fenced)
	require.Equal(t, "b", string(get(t, a, "k").Data))
	require.False(t, time.Now().Before(stale.safeUntil), "the writer itself would not have sent it")
}

// An ETag write on the wire (docs/state-store-protocol.md#mapping-dapr-state-operations): SET lock
// NX PX (not persisted), VDEL key owner (is the key fenced?) and GET at once, on an unfenced key SET key
// <value read> NEX with __ft = the lock's version, SET with __ft = the lock's version, VDEL lock
// owner; the answer comes before the release is answered, and the store's next lock of the key
// waits for that.
func TestWireETagSequence(t *testing.T) {
	for _, fenced := range []bool{true, false} {
		t.Run(map[bool]string{true: "fenced", false: "unfenced"}[fenced], func(t *testing.T) { wireETagSequence(t, fenced) })
	}
}

func wireETagSequence(t *testing.T, fenced bool) {
	kb := startBroker(t, false)
	f := dialFakeStore(t, kb)
	s := newStore(t, props(kb.url(), "r1"))
	releaseWait := make(chan string, 1)
	s.hooks.releaseWait = func(lockKey string) { releaseWait <- lockKey }
	const etag, lockVersion = "001696374425000:00003:store", "001696374425000:00007:store"
	done := make(chan error, 1)
	go func() {
		done <- s.Set(t.Context(), &state.SetRequest{Key: "k", Value: []byte("new"), ETag: ptr(etag)})
	}()

	req := f.next(t)
	lock := "k" + DefaultLockSuffix
	elems, err := resp3.DecodeArray(req.Payload)
	require.NoError(t, err)
	require.Len(t, elems, 6)
	require.Equal(t, []string{"SET", lock}, []string{string(elems[0]), string(elems[1])})
	owner := string(elems[2])
	require.Contains(t, owner, "app-r1-kv/")
	require.Equal(t, []string{"NX", "PX", "10000"}, []string{string(elems[3]), string(elems[4]), string(elems[5])})
	require.Empty(t, req.Properties.User.Get("aio-persistence"))
	f.answer(t, req, "+OK\r\n", "__stat", "200", "__ts", lockVersion)

	// The fencing probe (VDEL with the unique owner as value and no token) and the GET go out
	// together: both arrive before either is answered, in either order.
	probe, read := f.next(t), f.next(t)
	if string(probe.Payload) == "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n" {
		probe, read = read, probe
	}
	require.Equal(t, string(resp3.EncodeArray([]byte("VDEL"), []byte("k"), []byte(owner))), string(probe.Payload))
	require.Empty(t, probe.Properties.User.Get("__ft"))
	require.Equal(t, "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n", string(read.Payload))
	if fenced {
		f.answer(t, probe, "-ERR "+msgFencingRequired+"\r\n", "__stat", "200")
	} else {
		f.answer(t, probe, ":-1\r\n", "__stat", "200", "__ts", etag)
	}
	f.answer(t, read, "$3\r\nold\r\n", "__stat", "200", "__ts", etag)

	if !fenced {
		// First ETag write on an unfenced key: fence it with the value read, NEX.
		req = f.next(t)
		require.Equal(t, string(resp3.EncodeArray([]byte("SET"), []byte("k"), []byte("old"), []byte("NEX"))), string(req.Payload))
		require.Equal(t, lockVersion, req.Properties.User.Get("__ft"))
		f.answer(t, req, "+OK\r\n", "__stat", "200", "__ts", "001696374425000:00008:store")
	}

	req = f.next(t)
	require.Equal(t, "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$3\r\nnew\r\n", string(req.Payload))
	require.Equal(t, lockVersion, req.Properties.User.Get("__ft"))
	require.Equal(t, "true", req.Properties.User.Get("aio-persistence"))
	f.answer(t, req, "+OK\r\n", "__stat", "200", "__ts", "001696374425000:00009:store")

	req = f.next(t)
	require.Equal(t, string(resp3.EncodeArray([]byte("VDEL"), []byte(lock), []byte(owner))), string(req.Payload))
	// The answer does not wait for the release's (releaseLater) ...
	require.NoError(t, waitChan(t, done, "the ETag write's answer before its release is answered"))
	// ... but this store's next lock of the key does: nothing is sent until the release is answered.
	del := make(chan error, 1)
	go func() { del <- s.Delete(t.Context(), &state.DeleteRequest{Key: "k"}) }()
	require.Equal(t, lock, waitChan(t, releaseWait, "the delete to wait for the release"))
	require.Empty(t, f.reqs, "no lock request before the release is answered")
	f.answer(t, req, ":1\r\n", "__stat", "200")
	req = f.next(t)
	require.Equal(t, []string{"SET", lock}, firstTwo(t, req.Payload))
	f.answer(t, req, "+OK\r\n", "__stat", "200", "__ts", "001696374425000:00010:store")
	req = f.next(t)
	require.Equal(t, []string{"DEL", "k"}, firstTwo(t, req.Payload))
	f.answer(t, req, ":1\r\n", "__stat", "200", "__ts", "001696374425000:00011:store")
	req = f.next(t)
	require.Equal(t, []string{"VDEL", lock}, firstTwo(t, req.Payload))
	require.NoError(t, waitChan(t, del, "the delete"))
	f.answer(t, req, ":1\r\n", "__stat", "200")
}

func firstTwo(t *testing.T, payload []byte) []string {
	t.Helper()
	elems, err := resp3.DecodeArray(payload)
	require.NoError(t, err)
	require.GreaterOrEqual(t, len(elems), 2)
	return []string{string(elems[0]), string(elems[1])}
}

// A writer that dies holding a key's lock (acquired, never released) delays other ETag writers by
// at most lockTTL; the key keeps its value meanwhile and the next ETag write succeeds.
func TestCrashedLockHolderExpires(t *testing.T) {
	kb := startBroker(t, true)
	short := props(kb.url(), "a", "lockTTL", "1s", "lockMargin", "500ms")
	a := newStore(t, short)
	set(t, a, "k", "v0")
	etag := get(t, a, "k").ETag
	ra, md, err := a.state()
	require.NoError(t, err)
	_, err = acquire(t.Context(), ra, md, "k") // the "crashed" writer: no release
	require.NoError(t, err)

	b := newStore(t, props(kb.url(), "b", "requestTimeout", "5s"))
	require.Equal(t, "v0", string(get(t, b, "k").Data))
	start := time.Now()
	require.NoError(t, b.Set(t.Context(), &state.SetRequest{Key: "k", Value: []byte("v1"), ETag: etag}))
	require.Less(t, time.Since(start), 3*time.Second)
	require.Equal(t, "v1", string(get(t, b, "k").Data))
}
