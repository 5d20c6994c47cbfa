package statestore

import (
	"context"
	"time"
)

// Change is one change handed to a BatchStore: a save of Record, or, when Delete, the removal of
// Record.Key (the other fields are then unset).
type Change struct {
	Record Record
	Delete bool
}

// BatchStore is a Store that makes many changes durable with one write (group commit). With one
// as Options.Store the engine no longer calls Save or Delete while serving (Load still may): it
// applies each change in memory at once, hands the changes of every request that arrived
// meanwhile to Apply together from a goroutine of its own, and holds the answer of every request
// served while a change is not yet durable (a GET that could have read it included) until Apply
// returns. So N concurrent SETs cost far fewer than N fdatasyncs, and no client reads a change
// before it is durable.
//
// When Apply fails, every held answer becomes `__stat` 500 and the engine undoes in memory every
// change made since the last successful Apply, in reverse order: no client ever sees a change
// that was answered as failed. Apply is called from one goroutine at a time, never concurrently
// with Load, Save or Delete, and must not call back into the Engine.
type BatchStore interface {
	Store
	// Apply makes changes durable in order and returns once they are. On error the store must
	// keep none of them as live (a crash may still leave them on disk, as for a failed Save).
	Apply(ctx context.Context, changes []Change) error
}

// undoEntry is the state of one key before a change made while some change was not yet durable;
// prev is nil when the key did not exist.
type undoEntry struct {
	seq  uint64 // the change is undone unless changes up to seq become durable
	key  string
	prev *entry
}

// waiter is an answer held until the changes up to seq are durable.
type waiter struct {
	seq  uint64
	req  Request
	res  Result
	done func(Result)
}

// stageSave records the save of rec for the next group commit, or, without a BatchStore, saves it
// at once. Caller holds e.mu.
func (e *Engine) stageSave(ctx context.Context, rec Record) error {
	if e.batch == nil {
		return e.opts.Store.Save(ctx, rec)
	}
	e.stage(Change{Record: rec})
	return nil
}

// stageDelete is stageSave for the removal of key.
func (e *Engine) stageDelete(ctx context.Context, key []byte) error {
	if e.batch == nil {
		return e.opts.Store.Delete(ctx, key)
	}
	e.stage(Change{Record: Record{Key: []byte(string(key))}, Delete: true})
	return nil
}

// stage queues c and wakes the committer, starting it on first use. Caller holds e.mu.
func (e *Engine) stage(c Change) {
	e.staged = append(e.staged, c)
	e.seq++
	if !e.committing {
		e.committing = true
		e.answers = make(chan []waiter, 1)
		e.stopped = make(chan struct{})
		go e.commitLoop()
		go e.answerLoop()
	}
	e.commitCond.Signal()
}

// track records the state of key before a change, when the change could still be undone (some
// change is not yet durable). Caller holds e.mu and calls it after staging the change itself.
func (e *Engine) track(key string) {
	if e.batch == nil || e.seq == e.durable {
		return
	}
	u := undoEntry{seq: e.seq, key: key}
	if ent := e.keys[key]; ent != nil {
		prev := *ent
		u.prev = &prev
	}
	e.undo = append(e.undo, u)
}

// hold makes done wait for the changes staged so far when some are not durable yet; it returns
// false (the caller answers at once) when everything is durable. Caller holds e.mu.
func (e *Engine) hold(req Request, res Result, done func(Result)) bool {
	if e.seq == e.durable {
		return false
	}
	e.waiting = append(e.waiting, waiter{seq: e.seq, req: req, res: res, done: done})
	return true
}

// commitLoop hands the staged changes to the BatchStore, as many as are staged at a time, and
// passes the answers they release to answerLoop. It stops once the engine is closed and nothing is
// staged.
func (e *Engine) commitLoop() {
	defer close(e.answers)
	e.mu.Lock()
	for {
		for len(e.staged) == 0 && !e.closed {
			e.commitCond.Wait()
		}
		if len(e.staged) == 0 {
			e.mu.Unlock()
			return
		}
		changes, upto := e.staged, e.seq
		e.staged = nil
		e.mu.Unlock()
		err := e.batch.Apply(context.Background(), changes)
		e.mu.Lock()
		ready := e.settle(upto, err)
		e.mu.Unlock()
		e.answers <- ready
		e.mu.Lock()
	}
}

// settle records the outcome of the Apply of the changes up to upto and returns the answers it
// releases. On success those are the answers that waited for upto at most. On failure every change
// made since the last durable one is undone, those staged after upto too (they were made on top of
// the failed ones), and every held answer becomes the failure. Caller holds e.mu.
func (e *Engine) settle(upto uint64, err error) []waiter {
	if err == nil {
		e.durable = upto
		n := 0
		for n < len(e.undo) && e.undo[n].seq <= upto {
			n++
		}
		e.undo = append(e.undo[:0], e.undo[n:]...)
		n = 0
		for n < len(e.waiting) && e.waiting[n].seq <= upto {
			n++
		}
		ready := append([]waiter(nil), e.waiting[:n]...)
		e.waiting = append(e.waiting[:0], e.waiting[n:]...)
		return ready
	}
	e.log.Error("state store persistence failed; the batch's requests are refused and its changes undone",
		"requests", len(e.waiting), "err", err)
	for i := len(e.undo) - 1; i >= 0; i-- {
		e.restore(e.undo[i])
	}
	e.undo, e.staged, e.durable = nil, nil, e.seq
	ready := e.waiting
	e.waiting = nil
	for i := range ready {
		ready[i].res = Result{Response: responseMessage(ready[i].req, persistFailedReply())}
	}
	return ready
}

// restore puts key back in the state u recorded, without tracking it. Caller holds e.mu.
func (e *Engine) restore(u undoEntry) {
	cur := e.keys[u.key]
	if u.prev == nil {
		if cur != nil {
			delete(e.keys, u.key)
			cur.expires = time.Time{}
			e.deadlines.set(cur)
		}
		return
	}
	if cur == nil {
		cur = &entry{heapIdx: -1}
		e.keys[u.key] = cur
	}
	idx := cur.heapIdx
	*cur = *u.prev
	cur.heapIdx = idx
	e.deadlines.set(cur)
}

// answerLoop runs the done of every released answer, in order, off the committer's goroutine, so
// that publishing the answers never delays the next commit.
func (e *Engine) answerLoop() {
	defer close(e.stopped)
	for ready := range e.answers {
		for _, w := range ready {
			w.done(w.res)
		}
	}
}
