// Command noop serves the floors of the benchmarks (bench/): a pluggable pub/sub "pubsub.noop" and
// a pluggable state store "state.noop" on the unix socket <DAPR_COMPONENT_SOCKETS_FOLDER>/noop.sock,
// built on the same components-go-sdk as mqdapr's components. They answer at once and keep
// nothing, so what they cost through daprd is what daprd and the socket hop cost by themselves:
// the ceiling of any pluggable component on the same machine and daprd.
//
// The pub/sub hands every published message straight to the subscription of its topic (dropped
// when there is none) and returns; at most maxInFlight messages wait for the app's answer, then
// Publish waits (flow control, as Receive Maximum). A handler error is dropped: nothing is kept to
// redeliver. The state store answers every Get with the same 64-byte value and ETag "1" and
// accepts every write.
package main

import (
	"bytes"
	"context"
	"sync"

	dapr "github.com/dapr-sandbox/components-go-sdk"
	sdkpubsub "github.com/dapr-sandbox/components-go-sdk/pubsub/v1"
	sdkstate "github.com/dapr-sandbox/components-go-sdk/state/v1"
	"github.com/dapr/components-contrib/pubsub"
	"github.com/dapr/components-contrib/state"

	"github.com/mqdapr/mqdapr/internal/pluggable"
)

// maxInFlight bounds the deliveries waiting for the app (per instance), like a Receive Maximum.
const maxInFlight = 64

// value is what every Get returns: the benchmarks' payload size.
var value = bytes.Repeat([]byte("x"), 64)

func main() {
	log := pluggable.NewLogger("noop")
	var instances pluggable.Instances
	dapr.Register("noop",
		dapr.WithPubSub(func() sdkpubsub.PubSub { return pluggable.Track(&instances, newPubSub()) }),
		dapr.WithStateStore(func() sdkstate.Store { return pluggable.Track(&instances, &store{}) }),
	)
	pluggable.Finish(log, &instances, dapr.Run())
}

// pubSub is the no-op pub/sub: topic → the handler of its subscription.
type pubSub struct {
	slots chan struct{} // one token per delivery in flight

	mu   sync.RWMutex // guards subs
	subs map[string]subscription
}

type subscription struct {
	ctx     context.Context
	handler pubsub.Handler
}

func newPubSub() *pubSub {
	return &pubSub{slots: make(chan struct{}, maxInFlight), subs: map[string]subscription{}}
}

func (p *pubSub) Init(context.Context, pubsub.Metadata) error { return nil }

func (p *pubSub) Features() []pubsub.Feature { return nil }

// Publish starts the delivery of req to its topic's subscription and returns without waiting for
// the app; it waits only while maxInFlight deliveries are unanswered.
func (p *pubSub) Publish(ctx context.Context, req *pubsub.PublishRequest) error {
	p.mu.RLock()
	sub, ok := p.subs[req.Topic]
	p.mu.RUnlock()
	if !ok {
		return nil
	}
	select {
	case p.slots <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	msg := &pubsub.NewMessage{Topic: req.Topic, Data: req.Data, Metadata: req.Metadata, ContentType: req.ContentType}
	go func() {
		defer func() { <-p.slots }()
		_ = sub.handler(sub.ctx, msg) // nothing is kept, so nothing is redelivered
	}()
	return nil
}

// Subscribe records the handler until the subscription's context ends.
func (p *pubSub) Subscribe(ctx context.Context, req pubsub.SubscribeRequest, handler pubsub.Handler) error {
	p.mu.Lock()
	p.subs[req.Topic] = subscription{ctx: ctx, handler: handler}
	p.mu.Unlock()
	context.AfterFunc(ctx, func() {
		p.mu.Lock()
		defer p.mu.Unlock()
		if s, ok := p.subs[req.Topic]; ok && s.ctx == ctx {
			delete(p.subs, req.Topic)
		}
	})
	return nil
}

func (p *pubSub) Close() error { return nil }

// store is the no-op state store.
type store struct{}

// etag is the ETag of every value; every write accepts any ETag.
var etag = "1"

func (*store) Init(context.Context, state.Metadata) error { return nil }

func (*store) Features() []state.Feature { return []state.Feature{state.FeatureETag} }

func (*store) Delete(context.Context, *state.DeleteRequest) error { return nil }

func (*store) Get(context.Context, *state.GetRequest) (*state.GetResponse, error) {
	return &state.GetResponse{Data: value, ETag: &etag}, nil
}

func (*store) Set(context.Context, *state.SetRequest) error { return nil }

func (*store) BulkGet(_ context.Context, reqs []state.GetRequest, _ state.BulkGetOpts) ([]state.BulkGetResponse, error) {
	out := make([]state.BulkGetResponse, len(reqs))
	for i, r := range reqs {
		out[i] = state.BulkGetResponse{Key: r.Key, Data: value, ETag: &etag}
	}
	return out, nil
}

func (*store) BulkSet(context.Context, []state.SetRequest, state.BulkStoreOpts) error { return nil }

func (*store) BulkDelete(context.Context, []state.DeleteRequest, state.BulkStoreOpts) error {
	return nil
}

func (*store) Close() error { return nil }
