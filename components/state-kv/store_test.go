package statekv

import (
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/dapr/components-contrib/state"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/broker/statestore"
	"github.com/mqdapr/mqdapr/internal/hlc"
)

func requireETagErr(t *testing.T, err error, kind state.ETagErrorKind) {
	t.Helper()
	var e *state.ETagError
	require.ErrorAs(t, err, &e)
	require.Equal(t, kind, e.Kind())
}

func TestGetSetDelete(t *testing.T) {
	kb := startBroker(t, true)
	s := newStore(t, props(kb.url(), "r1"))
	require.Equal(t, []state.Feature{state.FeatureETag, state.FeatureTTL}, s.Features())

	res := get(t, s, "missing")
	require.Nil(t, res.Data)
	require.Nil(t, res.ETag)

	set(t, s, "k", "v1")
	res = get(t, s, "k")
	require.Equal(t, "v1", string(res.Data))
	require.NotNil(t, res.ETag)
	v1, err := hlc.Parse(*res.ETag)
	require.NoError(t, err)

	set(t, s, "k", "")
	res = get(t, s, "k")
	require.Empty(t, res.Data)
	require.NotNil(t, res.ETag, "an empty value is a stored value")
	v2, err := hlc.Parse(*res.ETag)
	require.NoError(t, err)
	require.Positive(t, v2.Compare(v1))

	// Values other than []byte are stored as JSON, as contrib's stores do.
	require.NoError(t, s.Set(t.Context(), &state.SetRequest{Key: "json", Value: map[string]int{"a": 1}}))
	require.JSONEq(t, `{"a":1}`, string(get(t, s, "json").Data))

	require.NoError(t, s.Delete(t.Context(), &state.DeleteRequest{Key: "k"}))
	require.Nil(t, get(t, s, "k").Data)
	require.NoError(t, s.Delete(t.Context(), &state.DeleteRequest{Key: "k"}), "deleting an absent key succeeds")
}

// aio-persistence is sent with every SET of an application key unless persistent is false; lock
// keys are never persisted. The broker's engine persists exactly the keys that asked for it.
func TestPersistence(t *testing.T) {
	mem := statestore.NewMemoryStore()
	kb := startBrokerWith(t, true, func(o *statestore.Options) { o.Store = mem })
	persisted := newStore(t, props(kb.url(), "r1"))
	set(t, persisted, "p", "v")
	require.NoError(t, persisted.Set(t.Context(), &state.SetRequest{Key: "p", Value: []byte("w"), ETag: get(t, persisted, "p").ETag}))
	set(t, newStore(t, props(kb.url(), "r2", "persistent", "false")), "np", "v")
	var keys []string
	for _, r := range mem.Records() {
		keys = append(keys, string(r.Key))
	}
	require.Equal(t, []string{"p"}, keys)
	require.Equal(t, "w", string(mem.Records()[0].Value))
}

func TestTTL(t *testing.T) {
	kb := startBroker(t, true)
	s := newStore(t, props(kb.url(), "r1"))
	set(t, s, "ttl", "v", "ttlInSeconds", "1")
	set(t, s, "keep", "v", "ttlInSeconds", "-1")
	require.Equal(t, "v", string(get(t, s, "ttl").Data))
	require.Eventually(t, func() bool { return get(t, s, "ttl").Data == nil }, 5*time.Second, 50*time.Millisecond)
	require.Equal(t, "v", string(get(t, s, "keep").Data))

	// A write without TTL clears an earlier one.
	set(t, s, "cleared", "v", "ttlInSeconds", "1")
	set(t, s, "cleared", "v2")
	_, ok := kb.engine.NextDeadline()
	require.False(t, ok)

	for _, bad := range []string{"foo", "-2", "1.5", "99999999999"} {
		err := s.Set(t.Context(), &state.SetRequest{Key: "ttl", Value: []byte("v"), Metadata: map[string]string{"ttlInSeconds": bad}})
		require.ErrorIs(t, err, ErrInvalidMetadata, bad)
		require.ErrorContains(t, err, "ttlInSeconds")
	}
}

func TestFirstWrite(t *testing.T) {
	kb := startBroker(t, true)
	s := newStore(t, props(kb.url(), "r1"))
	fw := func(v string, etag *string) error {
		return s.Set(t.Context(), &state.SetRequest{Key: "fw", Value: []byte(v), ETag: etag,
			Options: state.SetStateOption{Concurrency: state.FirstWrite}})
	}
	require.NoError(t, fw("a", nil))
	requireETagErr(t, fw("b", nil), state.ETagMismatch)
	empty := ""
	requireETagErr(t, fw("b", &empty), state.ETagMismatch)
	require.Equal(t, "a", string(get(t, s, "fw").Data))

	// With an ETag, first-write is a compare-and-set.
	etag := get(t, s, "fw").ETag
	require.NoError(t, fw("c", etag))
	requireETagErr(t, fw("d", etag), state.ETagMismatch)
	// On a key fenced by that ETag write, first-write still reports "exists".
	requireETagErr(t, fw("e", nil), state.ETagMismatch)
	require.Equal(t, "c", string(get(t, s, "fw").Data))
}

func TestETag(t *testing.T) {
	kb := startBroker(t, true)
	s := newStore(t, props(kb.url(), "r1"))
	set(t, s, "e", "v1")
	etag1 := *get(t, s, "e").ETag

	require.NoError(t, s.Set(t.Context(), &state.SetRequest{Key: "e", Value: []byte("v2"), ETag: &etag1}))
	res := get(t, s, "e")
	require.Equal(t, "v2", string(res.Data))
	etag2 := *res.ETag
	require.NotEqual(t, etag1, etag2)

	requireETagErr(t, s.Set(t.Context(), &state.SetRequest{Key: "e", Value: []byte("v3"), ETag: &etag1}), state.ETagMismatch)
	bad := "not-a-version"
	requireETagErr(t, s.Set(t.Context(), &state.SetRequest{Key: "e", Value: []byte("v3"), ETag: &bad}), state.ETagInvalid)
	requireETagErr(t, s.Delete(t.Context(), &state.DeleteRequest{Key: "e", ETag: &bad}), state.ETagInvalid)
	missing := "001696374425000:00000:x"
	requireETagErr(t, s.Set(t.Context(), &state.SetRequest{Key: "absent", Value: []byte("v"), ETag: &missing}), state.ETagMismatch)
	require.Equal(t, "v2", string(get(t, s, "e").Data))

	// The key is now fenced: writes and deletes without an ETag still work (they take the key's
	// lock and present its version as token).
	set(t, s, "e", "v4")
	etag4 := *get(t, s, "e").ETag
	requireETagErr(t, s.Delete(t.Context(), &state.DeleteRequest{Key: "e", ETag: &etag2}), state.ETagMismatch)
	require.NoError(t, s.Delete(t.Context(), &state.DeleteRequest{Key: "e", ETag: &etag4}))
	require.Nil(t, get(t, s, "e").Data)
	requireETagErr(t, s.Delete(t.Context(), &state.DeleteRequest{Key: "e", ETag: &etag4}), state.ETagMismatch)

	set(t, s, "e", "v5")
	require.NoError(t, s.Set(t.Context(), &state.SetRequest{Key: "e", Value: []byte("v6"), ETag: get(t, s, "e").ETag}))
	require.NoError(t, s.Delete(t.Context(), &state.DeleteRequest{Key: "e"}))
	require.Nil(t, get(t, s, "e").Data)
	require.Eventually(t, func() bool { return kb.engine.Len() == 0 }, waitFor, time.Millisecond, "locks are released (after the answers, releaseLater)")
}

func TestBadInput(t *testing.T) {
	kb := startBroker(t, true)
	s := newStore(t, props(kb.url(), "r1", "maxValueBytes", "10"))
	_, err := s.Get(t.Context(), &state.GetRequest{Key: ""})
	require.ErrorIs(t, err, ErrInvalidKey)
	require.ErrorIs(t, s.Set(t.Context(), &state.SetRequest{Key: "", Value: []byte("v")}), ErrInvalidKey)
	require.ErrorIs(t, s.Delete(t.Context(), &state.DeleteRequest{Key: ""}), ErrInvalidKey)
	require.ErrorIs(t, s.Set(t.Context(), &state.SetRequest{Key: "k" + DefaultLockSuffix, Value: []byte("v")}), ErrInvalidKey)
	err = s.Set(t.Context(), &state.SetRequest{Key: "big", Value: []byte("01234567890")})
	require.ErrorIs(t, err, ErrInvalidValue)
	require.ErrorContains(t, err, "maxValueBytes")
	require.ErrorIs(t, s.Set(t.Context(), &state.SetRequest{Key: "k", Value: func() {}}), ErrInvalidValue)
}

// The broker's limits come back as errors naming the key: its Maximum Packet Size before sending,
// its key-value store's quota in band.
func TestBrokerLimits(t *testing.T) {
	kb := startBrokerWith(t, true, func(o *statestore.Options) { o.MaxValueBytes = 100 })
	s := newStore(t, props(kb.url(), "r1", "maxValueBytes", "0"))
	err := s.Set(t.Context(), &state.SetRequest{Key: "huge", Value: make([]byte, 2<<20)})
	require.ErrorIs(t, err, ErrInvalidValue)
	require.ErrorContains(t, err, `"huge"`)
	require.ErrorContains(t, err, "Maximum Packet Size")
	err = s.Set(t.Context(), &state.SetRequest{Key: "big", Value: make([]byte, 101)})
	require.ErrorIs(t, err, ErrStoreError)
	require.ErrorContains(t, err, `"big"`)
	require.ErrorContains(t, err, "quota")
}

func TestNotInitialisedAndClosed(t *testing.T) {
	s := New(testLog)
	_, err := s.Get(t.Context(), &state.GetRequest{Key: "k"})
	require.ErrorIs(t, err, ErrNotInitialized)
	require.ErrorIs(t, s.Set(t.Context(), &state.SetRequest{Key: "k"}), ErrNotInitialized)
	_, err = s.BulkGet(t.Context(), []state.GetRequest{{Key: "k"}}, state.BulkGetOpts{})
	require.ErrorIs(t, err, ErrNotInitialized)
	require.NoError(t, s.Close())
	require.NoError(t, s.Close())
	require.ErrorIs(t, s.Delete(t.Context(), &state.DeleteRequest{Key: "k"}), ErrClosed)
}

// A broker without a key-value store acknowledges requests but never answers: the error says so.
func TestBrokerWithoutKeyValueStore(t *testing.T) {
	kb := startBroker(t, false)
	s := newStore(t, props(kb.url(), "r1", "requestTimeout", "300ms"))
	_, err := s.Get(t.Context(), &state.GetRequest{Key: "k"})
	require.ErrorIs(t, err, ErrNoResponse)
	require.ErrorContains(t, err, "state store")
}

func TestInitErrors(t *testing.T) {
	for name, p := range map[string]map[string]string{
		"requestTimeout":  props("mqtt://127.0.0.1:1", "r", "requestTimeout", "1ms"),
		"lockMargin":      props("mqtt://127.0.0.1:1", "r", "lockTTL", "2s", "lockMargin", "2s"),
		"lockSuffix":      props("mqtt://127.0.0.1:1", "r", "lockSuffix", ""),
		"persistent":      props("mqtt://127.0.0.1:1", "r", "persistent", "maybe"),
		"bulkParallelism": props("mqtt://127.0.0.1:1", "r", "bulkParallelism", "0"),
	} {
		err := New(testLog).Init(t.Context(), state.Metadata{Base: metadataBase(p)})
		require.ErrorIs(t, err, ErrInvalidMetadata, name)
		require.ErrorContains(t, err, name)
	}
	// Unknown keys only warn; daprd's keyPrefix is accepted.
	kb := startBroker(t, true)
	newStore(t, props(kb.url(), "r1", "keyPrefix", "name", "someUnknownKey", "x"))
}

func TestReInitSameMetadataKeepsConnection(t *testing.T) {
	kb := startBroker(t, true)
	p := props(kb.url(), "r1")
	s := newStore(t, p)
	id := s.ClientID()
	require.Equal(t, "app-r1-kv", id)
	require.NoError(t, s.Init(t.Context(), state.Metadata{Base: metadataBase(p)}))
	set(t, s, "k", "v")
	p2 := props(kb.url(), "r2")
	require.NoError(t, s.Init(t.Context(), state.Metadata{Base: metadataBase(p2)}))
	require.Equal(t, "app-r2-kv", s.ClientID())
	require.Equal(t, "v", string(get(t, s, "k").Data))
}

// fanOut calls fn once for every index, with at most limit calls at once, and waits for them all
// (also for n = 0 and n below limit).
func TestFanOutRunsEachIndexOnceWithinLimit(t *testing.T) {
	for _, c := range []struct{ n, limit int }{{0, 4}, {1, 4}, {3, 16}, {100, 16}, {100, 1}} {
		var mu sync.Mutex
		seen := make([]int, c.n)
		running, most := 0, 0
		fanOut(c.n, c.limit, func(i int) {
			mu.Lock()
			seen[i]++
			running++
			most = max(most, running)
			mu.Unlock()
			runtime.Gosched()
			mu.Lock()
			running--
			mu.Unlock()
		})
		for i, k := range seen {
			require.Equal(t, 1, k, "n=%d limit=%d index %d", c.n, c.limit, i)
		}
		require.LessOrEqual(t, most, c.limit, "n=%d", c.n)
		require.Zero(t, running, "all returned")
	}
}
