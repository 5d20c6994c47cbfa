package statestore

import (
	"container/heap"
	"context"
	"time"
)

// deadlineHeap orders the entries that have a TTL by deadline; each entry knows its index, so a
// renewal (NEX ... PX) or a delete updates the heap in O(log n) and the heap never holds stale items.
type deadlineHeap []*entry

func (h deadlineHeap) Len() int           { return len(h) }
func (h deadlineHeap) Less(i, j int) bool { return h[i].expires.Before(h[j].expires) }
func (h deadlineHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].heapIdx = i
	h[j].heapIdx = j
}

func (h *deadlineHeap) Push(x any) {
	ent := x.(*entry)
	ent.heapIdx = len(*h)
	*h = append(*h, ent)
}

func (h *deadlineHeap) Pop() any {
	old := *h
	n := len(old)
	ent := old[n-1]
	old[n-1] = nil
	ent.heapIdx = -1
	*h = old[:n-1]
	return ent
}

// set puts ent into the heap at its deadline, moves it, or removes it when ent.expires is zero.
func (h *deadlineHeap) set(ent *entry) {
	switch {
	case ent.expires.IsZero() && ent.heapIdx >= 0:
		heap.Remove(h, ent.heapIdx)
	case ent.expires.IsZero():
	case ent.heapIdx >= 0:
		heap.Fix(h, ent.heapIdx)
	default:
		heap.Push(h, ent)
	}
}

// NextDeadline returns the earliest TTL deadline of any key, and false if no key has one. The
// embedding broker arms a timer for it and calls Expire when it fires; the deadline can move earlier
// after any Handle, so re-read it after each one.
func (e *Engine) NextDeadline() (time.Time, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if len(e.deadlines) == 0 {
		return time.Time{}, false
	}
	return e.deadlines[0].expires, true
}

// Expire deletes every key whose deadline is at or before now and returns the DELETE notifications
// to publish (docs/state-store-protocol.md#notifications: `*2 NOTIFY DELETE`, `__ts` = the expired
// key's version). A persisted key is also deleted from Options.Store; a failure there is logged,
// not returned, because the deadline is stored with the record and Load drops it anyway. With a
// BatchStore the deletion is made durable with the next group commit and the notifications are
// returned at once (an expiry answers no client; should that commit fail, the key is restored and
// expires again). After Close it returns nil.
func (e *Engine) Expire(ctx context.Context, now time.Time) []Message {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil
	}
	return e.expireLocked(ctx, now)
}

func (e *Engine) expireLocked(ctx context.Context, now time.Time) []Message {
	var notes []Message
	for len(e.deadlines) > 0 && !e.deadlines[0].expires.After(now) {
		ent := e.deadlines[0]
		if ent.persist {
			if err := e.stageDelete(ctx, []byte(ent.key)); err != nil {
				e.log.Warn("state store: deleting an expired key from persistence failed", "err", err)
			}
		}
		e.remove(ent)
		notes = append(notes, e.notifications([]byte(ent.key), ent.version, notifyDeletePayload())...)
	}
	return notes
}
