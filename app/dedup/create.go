package dedup

import (
	"bytes"
	"context"
	"errors"
	"sync"
	"time"

	"github.com/mqdapr/mqdapr/app/kv"
)

// maxCreateBatch bounds the claims of one CreateMany call.
const maxCreateBatch = 64

// creator sends the claims (first-writes) of the deliveries in flight together: the first claim
// that finds no call running sends its own at once; claims that arrive while a call runs wait and
// go in the next call, together. With partitioned subscriptions several handlers claim at once,
// and each call costs the app, daprd and the component a gRPC round trip each, whatever its size
// (the component still sends one SET NX per key to the broker, which commits them together).
//
// A batch that fails is retried key by key: the protocol does not say which keys the call
// created, so a key that now exists with exactly the record this claim sent (owner, done set of
// this process, attempt number) was created by the failed call and is granted; any
// other existing record is ErrExists, as for a single Create. (The record's Attempt number makes
// its bytes unique to one claim attempt: the clock alone could repeat.)
type creator struct {
	store kv.Store
	ttl   time.Duration

	mu    sync.Mutex // guards queue and busy
	queue []*createReq
	busy  bool // a call runs (its sender leads: it sends the next batch too, then hands over)
}

type createReq struct {
	key   string
	value []byte
	done  chan createRes // buffered: the sender never blocks
}

type createRes struct {
	err  error
	lead bool // not sent: the receiver sends the next batch
}

// create is Store.Create through the batcher. ctx bounds the wait; a claim abandoned after its
// batch was sent may still be created: the redelivery then finds it as its own earlier attempt.
func (c *creator) create(ctx context.Context, key string, value []byte) error {
	req := &createReq{key: key, value: value, done: make(chan createRes, 1)}
	c.mu.Lock()
	c.queue = append(c.queue, req)
	if c.busy {
		c.mu.Unlock()
		select {
		case res := <-req.done:
			if !res.lead {
				return res.err
			}
		case <-ctx.Done():
			c.abandon(req)
			return ctx.Err()
		}
		c.mu.Lock()
	}
	c.busy = true
	return c.lead(req)
}

// abandon removes req from the queue. A lead handed to it meanwhile is passed on; a req already
// taken into a batch gets its result in its buffered channel, read by nobody.
func (c *creator) abandon(req *createReq) {
	c.mu.Lock()
	for i, q := range c.queue {
		if q == req {
			c.queue = append(c.queue[:i], c.queue[i+1:]...)
			select {
			case <-req.done: // only a lead reaches a queued req
				c.handOver()
			default:
				c.mu.Unlock()
			}
			return
		}
	}
	c.mu.Unlock()
}

// lead sends one batch (the queue's head, which holds req unless req was sent already), then
// hands the lead to the next waiting claim. Called with mu held and busy set; returns req's result.
func (c *creator) lead(req *createReq) error {
	n := min(len(c.queue), maxCreateBatch)
	batch := append([]*createReq(nil), c.queue[:n]...)
	c.queue = append(c.queue[:0], c.queue[n:]...)
	c.mu.Unlock()
	c.send(batch)
	c.mu.Lock()
	c.handOver()
	return (<-req.done).err // req is in batch: the queue's head when it leads
}

// handOver gives the lead to the first waiting claim (which stays queued: it sends itself), or
// ends the leading. Called with mu held; unlocks it.
func (c *creator) handOver() {
	if len(c.queue) > 0 {
		c.queue[0].done <- createRes{lead: true} // buffered and empty: a queued req has no result
	} else {
		c.busy = false
	}
	c.mu.Unlock()
}

func (c *creator) send(batch []*createReq) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if len(batch) == 1 {
		batch[0].done <- createRes{err: c.store.Create(ctx, batch[0].key, batch[0].value, c.ttl)}
		return
	}
	items := make([]kv.Item, len(batch))
	for i, b := range batch {
		items[i] = kv.Item{Key: b.key, Value: b.value}
	}
	if err := c.store.CreateMany(ctx, items, c.ttl); err == nil {
		for _, b := range batch {
			b.done <- createRes{}
		}
		return
	}
	for _, b := range batch {
		b.done <- createRes{err: c.createOne(ctx, b)}
	}
}

// createOne is the key-by-key retry of a failed batch (see creator).
func (c *creator) createOne(ctx context.Context, b *createReq) error {
	err := c.store.Create(ctx, b.key, b.value, c.ttl)
	if !errors.Is(err, kv.ErrExists) {
		return err
	}
	val, _, found, gerr := c.store.Get(ctx, b.key)
	if gerr != nil {
		return gerr
	}
	if found && bytes.Equal(val, b.value) {
		return nil // created by the failed batch
	}
	return err
}
