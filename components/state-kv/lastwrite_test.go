package statekv

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/dapr/components-contrib/metadata"
	"github.com/dapr/components-contrib/state"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/broker/statestore"
)

// Writes without an ETag against ETag writers of the same key (issue 4): an ETag writer is stopped
// between its read and its write by a test hook, a last-write writer runs meanwhile, and either the
// ETag write fails with a mismatch or the last write waits for the lock and lands after it.

// newHookedStore is newStore with test hooks installed before Init.
func newHookedStore(t *testing.T, p map[string]string, h testHooks) *Store {
	t.Helper()
	s := New(testLog)
	s.hooks = h
	require.NoError(t, s.Init(t.Context(), state.Metadata{Base: metadata.Base{Properties: p}}))
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// pauser is a hook that blocks its first call until resume is closed; paused is closed when it
// blocks.
type pauser struct {
	once   sync.Once
	paused chan struct{}
	resume chan struct{}
}

func newPauser() *pauser {
	return &pauser{paused: make(chan struct{}), resume: make(chan struct{})}
}

func (p *pauser) hook(string) {
	p.once.Do(func() {
		close(p.paused)
		<-p.resume
	})
}

// busySignal is a lockBusy hook that reports, without blocking, that a writer waits for a lock.
func busySignal() (chan struct{}, func(string)) {
	c := make(chan struct{}, 1)
	return c, func(string) {
		select {
		case c <- struct{}{}:
		default:
		}
	}
}

func waitChan[T any](t *testing.T, c <-chan T, what string) T {
	t.Helper()
	select {
	case v := <-c:
		return v
	case <-time.After(waitFor):
		t.Fatalf("timed out waiting for %s", what)
		var zero T
		return zero
	}
}

func requireNotDone(t *testing.T, c <-chan error, what string) {
	t.Helper()
	select {
	case err := <-c:
		t.Fatalf("%s returned (%v) while the ETag writer held the lock", what, err)
	default:
	}
}

// The deterministic race on a key already fenced by an ETag write: a last-write Set or Delete
// issued while the ETag writer is paused between its GET and its SET finds the key fenced, waits for
// the lock, and lands after the ETag write, which succeeds.
func TestLastWriteWaitsForETagWriterOnFencedKey(t *testing.T) {
	for _, op := range []string{"set", "delete"} {
		t.Run(op, func(t *testing.T) {
			kb := startBroker(t, true)
			p := newPauser()
			w := newHookedStore(t, props(kb.url(), "w"), testHooks{etagRead: p.hook})
			busy, onBusy := busySignal()
			lw := newHookedStore(t, props(kb.url(), "lw"), testHooks{lockBusy: onBusy})

			set(t, lw, "k", "v0")
			require.NoError(t, lw.Set(t.Context(), &state.SetRequest{Key: "k", Value: []byte("v1"), ETag: get(t, lw, "k").ETag}))
			etag := get(t, lw, "k").ETag // the key is fenced now

			errW := make(chan error, 1)
			go func() {
				errW <- w.Set(t.Context(), &state.SetRequest{Key: "k", Value: []byte("etag-write"), ETag: etag})
			}()
			waitChan(t, p.paused, "the ETag writer to read")
			errL := make(chan error, 1)
			go func() {
				if op == "set" {
					errL <- lw.Set(t.Context(), &state.SetRequest{Key: "k", Value: []byte("last-write")})
				} else {
					errL <- lw.Delete(t.Context(), &state.DeleteRequest{Key: "k"})
				}
			}()
			waitChan(t, busy, "the last-write writer to wait for the lock")
			requireNotDone(t, errL, "the last write")
			close(p.resume)
			require.NoError(t, waitChan(t, errW, "the ETag write"))
			require.NoError(t, waitChan(t, errL, "the last write"))
			if op == "set" {
				require.Equal(t, "last-write", string(get(t, lw, "k").Data))
			} else {
				require.Nil(t, get(t, lw, "k").Data)
			}
			// Locks are released after the answer (releaseLater): soon, not necessarily yet.
			want := map[string]int{"set": 1, "delete": 0}[op]
			require.Eventually(t, func() bool { return kb.engine.Len() == want }, waitFor, time.Millisecond, "locks are released")
		})
	}
}

// The first ETag write on a key that only writes without an ETag have written (not fenced): a
// last-write Set between its GET and its fencing SET makes the ETag write fail (mismatch) and
// survives; one after the fence waits for the lock and lands after the ETag write; a Delete always
// waits for the lock; an ETag Delete fails if a last-write Set changed the key after its GET.
func TestFirstETagWriteOnUnfencedKey(t *testing.T) {
	type tc struct {
		name      string
		pauseAt   string // etagRead or etagFenced
		etagOp    string // set or delete
		lastOp    string // set or delete
		lastWaits bool   // the last write must wait for the lock (else it completes during the pause)
		etagWins  bool   // the ETag write succeeds (else ETag mismatch)
		want      string // final value; "" for absent
	}
	for _, c := range []tc{
		{"set before fence", "etagRead", "set", "set", false, false, "last-write"},
		{"set after fence", "etagFenced", "set", "set", true, true, "last-write"},
		{"delete before fence", "etagRead", "set", "delete", true, true, ""},
		{"set before etag delete", "etagRead", "delete", "set", false, false, "last-write"},
	} {
		t.Run(c.name, func(t *testing.T) {
			kb := startBroker(t, true)
			p := newPauser()
			h := testHooks{etagRead: p.hook}
			if c.pauseAt == "etagFenced" {
				h = testHooks{etagFenced: p.hook}
			}
			w := newHookedStore(t, props(kb.url(), "w"), h)
			busy, onBusy := busySignal()
			lw := newHookedStore(t, props(kb.url(), "lw"), testHooks{lockBusy: onBusy})

			set(t, lw, "k", "v0") // written without an ETag only: not fenced
			etag := get(t, lw, "k").ETag

			errW := make(chan error, 1)
			go func() {
				if c.etagOp == "set" {
					errW <- w.Set(t.Context(), &state.SetRequest{Key: "k", Value: []byte("etag-write"), ETag: etag})
				} else {
					errW <- w.Delete(t.Context(), &state.DeleteRequest{Key: "k", ETag: etag})
				}
			}()
			waitChan(t, p.paused, "the ETag writer to pause")
			errL := make(chan error, 1)
			go func() {
				if c.lastOp == "set" {
					errL <- lw.Set(t.Context(), &state.SetRequest{Key: "k", Value: []byte("last-write")})
				} else {
					errL <- lw.Delete(t.Context(), &state.DeleteRequest{Key: "k"})
				}
			}()
			if c.lastWaits {
				waitChan(t, busy, "the last-write writer to wait for the lock")
				requireNotDone(t, errL, "the last write")
			} else {
				require.NoError(t, waitChan(t, errL, "the last write"))
			}
			close(p.resume)
			err := waitChan(t, errW, "the ETag write")
			if c.etagWins {
				require.NoError(t, err)
			} else {
				requireETagErr(t, err, state.ETagMismatch)
			}
			if c.lastWaits {
				require.NoError(t, waitChan(t, errL, "the last write"))
			}
			res := get(t, lw, "k")
			if c.want == "" {
				require.Nil(t, res.Data)
			} else {
				require.Equal(t, c.want, string(res.Data))
			}
			// No lock left behind: only the key itself, if any, remains.
			// (released after the answer: soon, not necessarily yet)
			want := map[bool]int{true: 0, false: 1}[c.want == ""]
			require.Eventually(t, func() bool { return kb.engine.Len() == want }, waitFor, time.Millisecond, "locks are released")
		})
	}
}

// historyStore is a statestore.Store that records, in the order the engine applies them, the values
// written to one key (the engine calls Save under its lock, before it changes the key).
type historyStore struct {
	key    string
	mu     sync.Mutex
	values []string
}

func (h *historyStore) Save(_ context.Context, rec statestore.Record) error {
	if string(rec.Key) == h.key {
		h.mu.Lock()
		h.values = append(h.values, string(rec.Value))
		h.mu.Unlock()
	}
	return nil
}

func (h *historyStore) Delete(context.Context, []byte) error { return nil }

func (h *historyStore) Load(context.Context, func(statestore.Record) error) error { return nil }

// The randomized race: 2 components × 3 ETag read-modify-write writers (each appends its write id to
// the value it read, 8 successes each) and 2 components × 1 last-write writers (each writes marker
// values until the ETag writers are done), one key.
// From the engine's own history of the key: every successful ETag write lands right after the value
// it read (nothing landed between its read and its write, so it overwrote no write it had not seen),
// every successful write lands exactly once, and no failed write lands.
func TestETagAndLastWriteRaceNoLostUpdate(t *testing.T) {
	const key, etagWriters, etagWins, minMarkers, maxMarkers = "race", 3, 8, 5, 1000
	hist := &historyStore{key: key}
	kb := startBrokerWith(t, true, func(o *statestore.Options) { o.Store = hist })
	stores := []*Store{newStore(t, props(kb.url(), "a")), newStore(t, props(kb.url(), "b"))}
	set(t, stores[0], key, "I")

	type write struct{ base, value string }
	var (
		mu       sync.Mutex
		etagOK   []write
		markerOK []string
		wg, mwg  sync.WaitGroup
		etagDone atomic.Bool
		errs     = make(chan error, 2*(etagWriters+1))
	)
	start := make(chan struct{})
	for si, s := range stores {
		for g := range etagWriters {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				for i, won := 0, 0; won < etagWins; i++ {
					res, err := s.Get(t.Context(), &state.GetRequest{Key: key})
					if err != nil {
						errs <- err
						return
					}
					w := write{base: string(res.Data), value: fmt.Sprintf("%s|E%d.%d.%d", res.Data, si, g, i)}
					err = s.Set(t.Context(), &state.SetRequest{Key: key, Value: []byte(w.value), ETag: res.ETag})
					if err != nil && !isMismatch(err) {
						errs <- err
						return
					}
					if err == nil {
						won++
						mu.Lock()
						etagOK = append(etagOK, w)
						mu.Unlock()
					}
				}
			}()
		}
		mwg.Add(1)
		go func() {
			defer mwg.Done()
			<-start
			for i := 0; i < minMarkers || (i < maxMarkers && !etagDone.Load()); i++ {
				v := fmt.Sprintf("M%d.%d", si, i)
				if err := s.Set(t.Context(), &state.SetRequest{Key: key, Value: []byte(v)}); err != nil {
					errs <- err
					return
				}
				mu.Lock()
				markerOK = append(markerOK, v)
				mu.Unlock()
			}
		}()
	}
	close(start)
	wg.Wait()
	etagDone.Store(true)
	mwg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	require.Len(t, etagOK, 2*etagWriters*etagWins)
	require.GreaterOrEqual(t, len(markerOK), 2*minMarkers)

	hist.mu.Lock()
	h := hist.values
	hist.mu.Unlock()
	// A fencing SET rewrites the value it read: drop consecutive repeats (all written values differ).
	var seq []string
	for _, v := range h {
		if len(seq) == 0 || seq[len(seq)-1] != v {
			seq = append(seq, v)
		}
	}
	pos := map[string]int{}
	for i, v := range seq {
		_, dup := pos[v]
		require.False(t, dup, "value %q landed twice", v)
		pos[v] = i
	}
	require.Len(t, seq, 1+len(etagOK)+len(markerOK), "only the initial value and the successful writes land")
	for _, m := range markerOK {
		require.Contains(t, pos, m)
	}
	for _, w := range etagOK {
		i, ok := pos[w.value]
		require.True(t, ok, "ETag write %q did not land", w.value)
		require.Positive(t, i)
		require.Equal(t, w.base, seq[i-1], "ETag write %q overwrote %q, a write it had not read", w.value, seq[i-1])
	}
	require.Equal(t, seq[len(seq)-1], string(get(t, stores[0], key).Data))
	overwrittenMarkers := 0
	for _, w := range etagOK {
		if strings.HasPrefix(w.base, "M") && !strings.Contains(w.base, "|") {
			overwrittenMarkers++
		}
	}
	t.Logf("%d ETag writes, %d markers, %d ETag writes read a marker", len(etagOK), len(markerOK), overwrittenMarkers)
}

func isMismatch(err error) bool {
	var e *state.ETagError
	return errors.As(err, &e) && e.Kind() == state.ETagMismatch
}
