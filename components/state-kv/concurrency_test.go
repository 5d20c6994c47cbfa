package statekv

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/dapr/components-contrib/state"
	"github.com/stretchr/testify/require"
)

// Two components (two MQTT clients) write one key with the same ETag at the same moment, round
// after round: exactly one wins each round and the loser gets an ETag mismatch.
func TestETagRaceOneWinnerPerRound(t *testing.T) {
	kb := startBroker(t, true)
	a := newStore(t, props(kb.url(), "a"))
	b := newStore(t, props(kb.url(), "b"))
	set(t, a, "race", "start")
	for round := range 20 {
		etag := get(t, a, "race").ETag
		require.NotNil(t, etag)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		start := make(chan struct{})
		for i, s := range []*Store{a, b} {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				errs[i] = s.Set(t.Context(), &state.SetRequest{Key: "race", Value: []byte(fmt.Sprintf("%d-%d", round, i)), ETag: etag})
			}()
		}
		close(start)
		wg.Wait()
		wins := 0
		for _, err := range errs {
			if err == nil {
				wins++
				continue
			}
			requireETagErr(t, err, state.ETagMismatch)
		}
		require.Equal(t, 1, wins, "round %d: %v", round, errs)
		res := get(t, b, "race")
		winner := 0
		if errs[0] != nil {
			winner = 1
		}
		require.Equal(t, fmt.Sprintf("%d-%d", round, winner), string(res.Data))
	}
}

// Read-modify-write increments from 2 components × 4 goroutines, retrying on ETag mismatch: no
// increment is lost.
func TestETagCounterNoLostUpdate(t *testing.T) {
	kb := startBroker(t, true)
	stores := []*Store{newStore(t, props(kb.url(), "a")), newStore(t, props(kb.url(), "b"))}
	set(t, stores[0], "counter", "0")
	const workers, increments = 4, 10
	var wg sync.WaitGroup
	errCh := make(chan error, len(stores)*workers)
	for _, s := range stores {
		for range workers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for done := 0; done < increments; {
					res, err := s.Get(t.Context(), &state.GetRequest{Key: "counter"})
					if err != nil {
						errCh <- err
						return
					}
					n, _ := strconv.Atoi(string(res.Data))
					err = s.Set(t.Context(), &state.SetRequest{Key: "counter", Value: []byte(strconv.Itoa(n + 1)), ETag: res.ETag})
					var etagErr *state.ETagError
					switch {
					case err == nil:
						done++
					case errors.As(err, &etagErr) && etagErr.Kind() == state.ETagMismatch:
					default:
						errCh <- err
						return
					}
				}
			}()
		}
	}
	wg.Wait()
	close(errCh)
	for err := range errCh {
		require.NoError(t, err)
	}
	require.Equal(t, strconv.Itoa(len(stores)*workers*increments), string(get(t, stores[1], "counter").Data))
}

func TestBulk(t *testing.T) {
	kb := startBroker(t, true)
	s := newStore(t, props(kb.url(), "r1", "bulkParallelism", "4"))
	const n = 40
	sets := make([]state.SetRequest, n)
	gets := make([]state.GetRequest, n+1)
	for i := range n {
		sets[i] = state.SetRequest{Key: fmt.Sprintf("bulk-%02d", i), Value: []byte(strconv.Itoa(i))}
		gets[i] = state.GetRequest{Key: sets[i].Key}
	}
	gets[n] = state.GetRequest{Key: "bulk-missing"}
	require.NoError(t, s.BulkSet(t.Context(), sets, state.BulkStoreOpts{Parallelism: 1}))
	res, err := s.BulkGet(t.Context(), gets, state.BulkGetOpts{})
	require.NoError(t, err)
	require.Len(t, res, n+1)
	etags := map[string]*string{}
	for i, r := range res[:n] {
		require.Equal(t, gets[i].Key, r.Key)
		require.Equal(t, strconv.Itoa(i), string(r.Data))
		require.NotNil(t, r.ETag)
		require.Empty(t, r.Error)
		etags[r.Key] = r.ETag
	}
	require.Nil(t, res[n].Data)
	require.Nil(t, res[n].ETag)

	// One bad ETag: the others are written, the error names the failed key.
	stale := *etags["bulk-01"]
	err = s.BulkSet(t.Context(), []state.SetRequest{
		{Key: "bulk-00", Value: []byte("x"), ETag: etags["bulk-00"]},
		{Key: "bulk-01", Value: []byte("x"), ETag: ptr("001000000000000:00000:bad")},
		{Key: "", Value: []byte("x")},
	}, state.BulkStoreOpts{})
	errs := err.(interface{ Unwrap() []error }).Unwrap()
	require.Len(t, errs, 2)
	var bse state.BulkStoreError
	require.ErrorAs(t, errs[0], &bse)
	require.Equal(t, "bulk-01", bse.Key())
	require.NotNil(t, bse.ETagError())
	require.Equal(t, state.ETagMismatch, bse.ETagError().Kind())
	require.ErrorIs(t, errs[1], ErrInvalidKey)
	require.Equal(t, "x", string(get(t, s, "bulk-00").Data))
	require.Equal(t, "1", string(get(t, s, "bulk-01").Data))

	dels := make([]state.DeleteRequest, n)
	for i := range n {
		dels[i] = state.DeleteRequest{Key: sets[i].Key}
	}
	dels[1].ETag = &stale
	require.NoError(t, s.BulkDelete(t.Context(), dels, state.BulkStoreOpts{}))
	// Every key and, once their releases are answered (after the deletes', releaseLater), every lock is gone.
	require.Eventually(t, func() bool { return kb.engine.Len() == 0 }, waitFor, time.Millisecond)
	res, err = s.BulkGet(t.Context(), []state.GetRequest{{Key: ""}}, state.BulkGetOpts{})
	require.NoError(t, err)
	require.Contains(t, res[0].Error, "empty")
}

func ptr[T any](v T) *T { return &v }
