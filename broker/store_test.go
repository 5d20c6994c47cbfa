package broker

import (
	"sync"
	"testing"

	"github.com/stretchr/testify/require"
)

// recordingBackend keeps the ops of every transaction, in order.
type recordingBackend struct {
	memBackend
	mu  sync.Mutex // guards txs
	txs [][]op
}

func (r *recordingBackend) apply(ops []op) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.txs = append(r.txs, append([]op(nil), ops...))
	return nil
}

func (r *recordingBackend) applied() [][]op {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([][]op(nil), r.txs...)
}

// A lazy batch is applied, in submission order, no later than the transaction of a batch submitted
// after it (whose done sees it durable); alone, it is applied without any other submit.
func TestCommitterLazyBatches(t *testing.T) {
	rb := &recordingBackend{}
	c := newCommitter(rb, 0)
	defer c.close()

	c.submitLazy([]op{{kind: opDelEntry, owner: "sa", seq: 1}})
	done := make(chan error, 1)
	c.submit([]op{{kind: opPutEntry, owner: "sa", seq: 2, val: []byte("x")}}, func(err error) { done <- err })
	require.NoError(t, <-done)
	var seqs []uint64
	for _, tx := range rb.applied() {
		for _, o := range tx {
			seqs = append(seqs, o.seq)
		}
	}
	require.Equal(t, []uint64{1, 2}, seqs, "the lazy op is durable when the later batch's done runs, and before it")

	c.submitLazy([]op{{kind: opDelEntry, owner: "sa", seq: 2}})
	require.Eventually(t, func() bool {
		txs := rb.applied()
		last := txs[len(txs)-1]
		return last[len(last)-1].seq == 2 && last[len(last)-1].kind == opDelEntry
	}, waitFor, 5*lazyDelay/10)
}

// coalesce drops the puts that a later put or delete of the same entry overrides, and nothing else.
func TestCoalesce(t *testing.T) {
	put := func(owner string, seq uint64) op { return op{kind: opPutEntry, owner: owner, seq: seq, val: []byte{1}} }
	del := func(owner string, seq uint64) op { return op{kind: opDelEntry, owner: owner, seq: seq} }
	tests := []struct {
		name    string
		in, out []op
	}{
		{"put then delete", []op{put("a", 1), del("a", 1)}, []op{del("a", 1)}},
		{"put twice", []op{put("a", 1), put("a", 1)}, []op{put("a", 1)}},
		{"other entries kept", []op{put("a", 1), put("a", 2), del("b", 1), del("a", 1)}, []op{put("a", 2), del("b", 1), del("a", 1)}},
		{"delete then put", []op{del("a", 1), put("a", 1)}, []op{del("a", 1), put("a", 1)}},
		{"sessions untouched", []op{{kind: opPutSession, owner: "a"}, {kind: opDelSession, owner: "a"}}, []op{{kind: opPutSession, owner: "a"}, {kind: opDelSession, owner: "a"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			require.Equal(t, tt.out, coalesce(append([]op(nil), tt.in...), map[entryID]int{}))
		})
	}
}
