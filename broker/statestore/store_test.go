package statestore

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mqdapr/mqdapr/internal/hlc"
)

// failingStore wraps a MemoryStore and fails the operations it is told to.
type failingStore struct {
	*MemoryStore
	failSave, failDelete, failLoad bool
}

var errDisk = errors.New("disk full")

func (f *failingStore) Save(ctx context.Context, rec Record) error {
	if f.failSave {
		return errDisk
	}
	return f.MemoryStore.Save(ctx, rec)
}

func (f *failingStore) Delete(ctx context.Context, key []byte) error {
	if f.failDelete {
		return errDisk
	}
	return f.MemoryStore.Delete(ctx, key)
}

func (f *failingStore) Load(ctx context.Context, fn func(Record) error) error {
	if f.failLoad {
		return errDisk
	}
	return f.MemoryStore.Load(ctx, fn)
}

func withStore(s Store, all bool) func(*Options) {
	return func(o *Options) { o.Store, o.PersistAll = s, all }
}

const persist = "aio-persistence=true"

// TestPersistence covers `aio-persistence` (docs/state-store-protocol.md#mqtt-properties) and the
// Store seam.
func TestPersistence(t *testing.T) {
	store := NewMemoryStore()
	h := newHarness(t, withStore(store, false))
	ft := ts(t0, 0, "lock")
	res := h.do(array("SET", "p", "v", "PX", "60000"), h.nowTS(), persist, "__ft="+ft)
	checkPayload(t, res, "+OK\r\n")
	version, _ := res.Response.Properties.Get(PropTimestamp)
	h.set("volatile", "v")

	recs := store.Records()
	if len(recs) != 1 {
		t.Fatalf("records = %+v, want only the persisted key", recs)
	}
	r := recs[0]
	if string(r.Key) != "p" || string(r.Value) != "v" || r.Version.String() != version ||
		!r.Fenced || r.FencingToken.String() != ft || !r.ExpiresAt.Equal(time.UnixMilli(t0+60000)) {
		t.Errorf("record = %+v", r)
	}

	// A later SET without the property stops persisting the key (the latest SET decides).
	checkPayload(t, h.do(array("SET", "p", "v2"), h.nowTS(), "__ft="+ft), "+OK\r\n")
	if n := len(store.Records()); n != 0 {
		t.Errorf("records after unpersisted SET = %d", n)
	}
	// DEL of a persisted key deletes its record.
	checkPayload(t, h.do(array("SET", "q", "v"), h.nowTS(), persist), "+OK\r\n")
	checkPayload(t, h.do(array("DEL", "q")), ":1\r\n")
	if n := len(store.Records()); n != 0 {
		t.Errorf("records after DEL = %d", n)
	}
	// Only the value "true" asks for persistence.
	checkPayload(t, h.do(array("SET", "r", "v"), h.nowTS(), "aio-persistence=false"), "+OK\r\n")
	checkPayload(t, h.do(array("SET", "s", "v"), h.nowTS(), "aio-persistence=TRUE"), "+OK\r\n")
	if recs := store.Records(); len(recs) != 1 || string(recs[0].Key) != "s" {
		t.Errorf("records = %+v", recs)
	}
}

func TestPersistAll(t *testing.T) {
	store := NewMemoryStore()
	h := newHarness(t, withStore(store, true))
	h.set("a", "1")
	h.set("b", "2", "PX", "10")
	if n := len(store.Records()); n != 2 {
		t.Fatalf("records = %d, want 2", n)
	}
	// Expiry removes the record too.
	h.e.Expire(context.Background(), h.wall.Now().Add(10*time.Millisecond))
	if recs := store.Records(); len(recs) != 1 || string(recs[0].Key) != "a" {
		t.Errorf("records after expiry = %+v", recs)
	}
}

func TestNoStoreIgnoresPersistence(t *testing.T) {
	h := newHarness(t, nil)
	checkPayload(t, h.do(array("SET", "p", "v"), h.nowTS(), persist), "+OK\r\n")
}

// TestReload checks that a restarted engine serves the persisted keys with their versions, fencing
// tokens and absolute TTL deadlines, and issues versions above the reloaded ones.
func TestReload(t *testing.T) {
	store := NewMemoryStore()
	h1 := newHarness(t, withStore(store, false))
	ft := ts(t0, 0, "lock")
	res := h1.do(array("SET", "fenced", "f"), h1.nowTS(), persist, "__ft="+ft)
	fencedVersion, _ := res.Response.Properties.Get(PropTimestamp)
	checkPayload(t, h1.do(array("SET", "ttl", "t", "PX", "10000"), h1.nowTS(), persist), "+OK\r\n")
	checkPayload(t, h1.do(array("SET", "short", "s", "PX", "1000"), h1.nowTS(), persist), "+OK\r\n")
	// The last version issued before the "restart" is 50 s ahead of the wall clock.
	res = h1.do(array("SET", "late", "l"), "__ts="+ts(t0+50_000, 0, "c"), persist)
	lateVersion, _ := res.Response.Properties.Get(PropTimestamp)
	_ = h1.e.Close()

	// Restart 2 s later: the wall clock is 48 s behind the last version issued.
	h2 := newHarness(t, func(o *Options) {
		withStore(store, false)(o)
		now := o.Now
		o.Now = func() time.Time { return now().Add(2 * time.Second) }
	})

	checkResponse(t, h2.do(array("GET", "fenced")), "$1\r\nf\r\n", fencedVersion)
	checkResponse(t, h2.do(array("GET", "late")), "$1\r\nl\r\n", lateVersion)
	// The fencing token survived: an unfenced SET is refused.
	checkPayload(t, h2.do(array("SET", "fenced", "x"), "__ts="+ts(t0, 0, "c")),
		"-ERR a fencing token is required for this request\r\n")
	// "short" expired while stopped (deadline t0+1000 < t0+2000): dropped from memory and store.
	checkResponse(t, h2.do(array("GET", "short")), "$-1\r\n", "")
	for _, r := range store.Records() {
		if string(r.Key) == "short" {
			t.Error("expired record not deleted at Load")
		}
	}
	// "ttl" keeps its absolute deadline.
	if d, ok := h2.e.NextDeadline(); !ok || d.UnixMilli() != t0+10000 {
		t.Errorf("reloaded deadline = %v %v, want t0+10000", d, ok)
	}
	// New versions are above every reloaded one even though the wall clock is behind.
	res = h2.do(array("SET", "new", "n"), "__ts="+ts(t0-10_000, 0, "c"))
	checkPayload(t, res, "+OK\r\n")
	v, _ := res.Response.Properties.Get(PropTimestamp)
	nv, _ := hlc.Parse(v)
	lv, _ := hlc.Parse(lateVersion)
	if hlc.Compare(nv, lv) <= 0 {
		t.Errorf("version after reload %v not above reloaded %v", nv, lv)
	}
	notes := h2.e.Expire(context.Background(), time.UnixMilli(t0+10000))
	if len(notes) != 0 || len(store.Records()) != 2 {
		t.Errorf("after expiring ttl: notes %v, records %d", notes, len(store.Records()))
	}
}

func TestStoreFailures(t *testing.T) {
	store := &failingStore{MemoryStore: NewMemoryStore()}
	h := newHarness(t, withStore(store, false))
	checkPayload(t, h.do(array("SET", "p", "v"), h.nowTS(), persist), "+OK\r\n")

	check500 := func(res Result) {
		t.Helper()
		p := res.Response.Properties
		if s, _ := p.Get(PropStatus); s != "500" {
			t.Errorf("__stat = %q, want 500", s)
		}
		if m, _ := p.Get(PropStatusMessage); m == "" {
			t.Error("no __stMsg")
		}
		if res.Response.Payload != nil || len(res.Notifications) != 0 {
			t.Errorf("500 response with payload %q or notifications", res.Response.Payload)
		}
	}
	checkPayload(t, h.doAs("w", array("KEYNOTIFY", "p")), "+OK\r\n")
	store.failSave = true
	check500(h.do(array("SET", "p", "v2"), h.nowTS(), persist))
	checkPayload(t, h.do(array("GET", "p")), "$1\r\nv\r\n") // unchanged
	store.failSave, store.failDelete = false, true
	check500(h.do(array("DEL", "p")))
	check500(h.do(array("SET", "p", "unpersisted"), h.nowTS())) // must delete the record first
	checkPayload(t, h.do(array("GET", "p")), "$1\r\nv\r\n")

	// Expiry cannot be refused: the key goes, the failure is only logged.
	store.failDelete = false
	checkPayload(t, h.do(array("SET", "p", "v", "PX", "5"), h.nowTS(), persist), "+OK\r\n")
	store.failDelete = true
	if notes := h.e.Expire(context.Background(), h.wall.Now().Add(5*time.Millisecond)); len(notes) != 1 {
		t.Errorf("expiry notifications = %v", notes)
	}
	if h.e.Len() != 0 {
		t.Error("key kept after expiry with a failing store")
	}

	// Load failures wrap ErrLoad.
	store.failLoad = true
	e, err := NewEngine(h.opts)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Load(context.Background()); !errors.Is(err, ErrLoad) || !errors.Is(err, errDisk) {
		t.Errorf("Load = %v, want ErrLoad wrapping the store error", err)
	}
}

func TestLoadRejectsEmptyKey(t *testing.T) {
	store := NewMemoryStore()
	_ = store.Save(context.Background(), Record{Key: nil, Value: []byte("v")})
	o := NewDefaultOptions()
	o.Store = store
	e, err := NewEngine(o)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.Load(context.Background()); !errors.Is(err, ErrLoad) {
		t.Errorf("Load = %v, want ErrLoad", err)
	}
}

func TestMemoryStoreCopies(t *testing.T) {
	s := NewMemoryStore()
	ctx := context.Background()
	key, val := []byte("k"), []byte("v")
	if err := s.Save(ctx, Record{Key: key, Value: val}); err != nil {
		t.Fatal(err)
	}
	key[0], val[0] = 'X', 'X'
	recs := s.Records()
	if len(recs) != 1 || string(recs[0].Key) != "k" || string(recs[0].Value) != "v" {
		t.Errorf("records = %+v", recs)
	}
	canceled, cancel := context.WithCancel(ctx)
	cancel()
	if err := s.Save(canceled, Record{Key: key}); !errors.Is(err, context.Canceled) {
		t.Errorf("Save with canceled ctx = %v", err)
	}
	if err := s.Delete(ctx, []byte("absent")); err != nil {
		t.Errorf("Delete absent = %v", err)
	}
}
