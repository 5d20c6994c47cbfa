// Package pubsubserver serves a components-contrib pub/sub component as a Dapr pluggable
// component: the gRPC service dapr.proto.components.v1.PubSub (Init, Features, Publish, Ping and
// the PullMessages stream) and gRPC reflection, which daprd's discovery lists, on a unix socket.
// It replaces components-go-sdk's server for pub/sub, whose acknowledgement correlation can send
// on a channel the handler has closed (a panic) when a stream ends while acks arrive.
//
// Written from the proto (github.com/dapr/dapr/pkg/proto/components/v1) and daprd's client
// (dapr v1.16.0 pkg/components/pubsub/pluggable.go, pkg/components/pluggable/grpc.go):
//
//   - daprd puts the component's name (the Component's metadata.name) into the request header
//     x-component-instance of every call; one process serves every Component of its type on one
//     socket, one instance per name (instances are made on first use by the factory).
//   - PullMessages: daprd's first request names the topic; then the server sends each message
//     with an id and daprd answers each with a request carrying that id (AckMessageId) and the
//     app's error, if any (AckError). The handler the component got returns that error.
package pubsubserver

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"sync"

	contribmd "github.com/dapr/components-contrib/metadata"
	"github.com/dapr/components-contrib/pubsub"
	proto "github.com/dapr/dapr/pkg/proto/components/v1"
	"github.com/dapr/kit/logger"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/reflection"
	"google.golang.org/grpc/status"
)

// InstanceHeader is the request header in which daprd names the component instance a call is
// for (dapr pkg/components/pluggable/grpc.go metadataInstanceID).
const InstanceHeader = "x-component-instance"

// defaultInstance is the instance of calls without InstanceHeader (a client other than daprd).
const defaultInstance = ""

// ErrNoTopic is PullMessages' answer when daprd's first request names no topic.
var ErrNoTopic = status.Error(codes.InvalidArgument, "PullMessages: the first request must name the topic (PullMessagesRequest.topic)")

// Register adds the PubSub service serving the instances that newInstance makes, and the
// reflection service daprd's discovery uses, to s.
func Register(s *grpc.Server, log logger.Logger, newInstance func() pubsub.PubSub) {
	proto.RegisterPubSubServer(s, &server{log: log, newInstance: newInstance})
	reflection.Register(s)
}

type server struct {
	proto.UnimplementedPubSubServer
	log         logger.Logger
	newInstance func() pubsub.PubSub

	mu        sync.Mutex // guards instances
	instances map[string]pubsub.PubSub
}

// instance is the component instance the call's InstanceHeader names, made on first use.
func (s *server) instance(ctx context.Context) pubsub.PubSub {
	name := defaultInstance
	if md, ok := metadata.FromIncomingContext(ctx); ok {
		if v := md.Get(InstanceHeader); len(v) > 0 {
			name = v[0]
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	ps, ok := s.instances[name]
	if !ok {
		if s.instances == nil {
			s.instances = make(map[string]pubsub.PubSub)
		}
		ps = s.newInstance()
		s.instances[name] = ps
	}
	return ps
}

func (s *server) Init(ctx context.Context, req *proto.PubSubInitRequest) (*proto.PubSubInitResponse, error) {
	err := s.instance(ctx).Init(ctx, pubsub.Metadata{Base: contribmd.Base{Properties: req.GetMetadata().GetProperties()}})
	if err != nil {
		return nil, err
	}
	return &proto.PubSubInitResponse{}, nil
}

func (s *server) Features(ctx context.Context, _ *proto.FeaturesRequest) (*proto.FeaturesResponse, error) {
	fs := s.instance(ctx).Features()
	out := make([]string, len(fs))
	for i, f := range fs {
		out[i] = string(f)
	}
	return &proto.FeaturesResponse{Features: out}, nil
}

func (s *server) Publish(ctx context.Context, req *proto.PublishRequest) (*proto.PublishResponse, error) {
	ct := req.GetContentType()
	err := s.instance(ctx).Publish(ctx, &pubsub.PublishRequest{
		Data:        req.GetData(),
		PubsubName:  req.GetPubsubName(),
		Topic:       req.GetTopic(),
		Metadata:    req.GetMetadata(),
		ContentType: &ct,
	})
	if err != nil {
		return nil, err
	}
	return &proto.PublishResponse{}, nil
}

// BulkPublish is not served (the unimplemented answer): none of mqdapr's pub/sub components
// advertises pubsub.FeatureBulkPublish, and daprd then publishes one message at a time.

func (s *server) Ping(context.Context, *proto.PingRequest) (*proto.PingResponse, error) {
	return &proto.PingResponse{}, nil
}

// PullMessages subscribes the instance to the topic of the stream's first request and serves the
// stream until daprd ends it: each message the component hands to the handler is sent with a
// new id, and the handler returns when daprd's ack for that id arrives (nil, or the app's error),
// when the handler's context ends, or when the stream ends (errStreamEnded).
func (s *server) PullMessages(stream proto.PubSub_PullMessagesServer) error {
	first, err := stream.Recv()
	if err != nil {
		return err
	}
	topic := first.GetTopic()
	if topic == nil {
		return ErrNoTopic
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	p := newPull(stream, ctx.Done())
	if err := s.instance(ctx).Subscribe(ctx, pubsub.SubscribeRequest{Topic: topic.GetName(), Metadata: topic.GetMetadata()}, p.handle); err != nil {
		return err
	}
	for {
		req, err := stream.Recv()
		if err != nil {
			// io.EOF: daprd closed its side (the subscription ends). Either way the deferred
			// cancel ends the subscription and every handler still waiting.
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
		if !p.ack(req.GetAckMessageId(), req.GetAckError()) {
			s.log.Debugf("pub/sub stream of topic %s: ack for unknown message id %q (its handler already returned)", topic.GetName(), req.GetAckMessageId())
		}
	}
}

// errStreamEnded is what a handler returns when its stream ended before daprd's ack arrived: the
// component redelivers the message (to a later stream).
var errStreamEnded = errors.New("pluggable pub/sub: the PullMessages stream ended before daprd acknowledged the message")

// pull correlates one PullMessages stream's messages with daprd's acks.
//
// Race freedom: a waiting handler's channel is in pending until exactly one of two parties takes
// it out, under mu: the ack (which then sends the result, never blocking: the channel holds one
// and nobody else sends) or the handler giving up. Channels are never closed, so no send can
// meet a closed channel. Memory: pending holds one entry per handler call in progress, which the
// component bounds (its in-flight limit); entries leave on ack or when the handler returns.
type pull struct {
	stream proto.PubSub_PullMessagesServer
	done   <-chan struct{} // the stream's end

	sendMu sync.Mutex // one Send at a time (gRPC streams allow one sender)

	mu      sync.Mutex // guards next, pending
	next    uint64
	pending map[uint64]chan error
}

func newPull(stream proto.PubSub_PullMessagesServer, done <-chan struct{}) *pull {
	return &pull{stream: stream, done: done, pending: make(map[uint64]chan error)}
}

// ackChans recycles the one-slot channels of acknowledged messages.
var ackChans = sync.Pool{New: func() any { return make(chan error, 1) }}

// ackError is what a handler returns when daprd acked its message with an error: daprd's error
// message (the app's error), as components-go-sdk returned it.
type ackError string

func (e ackError) Error() string { return string(e) }

func (p *pull) handle(ctx context.Context, msg *pubsub.NewMessage) error {
	ch := ackChans.Get().(chan error)
	p.mu.Lock()
	p.next++
	id := p.next
	p.pending[id] = ch
	p.mu.Unlock()

	resp := &proto.PullMessagesResponse{
		Data:      msg.Data,
		TopicName: msg.Topic,
		Metadata:  msg.Metadata,
		Id:        strconv.FormatUint(id, 10),
	}
	if msg.ContentType != nil {
		resp.ContentType = *msg.ContentType
	}
	p.sendMu.Lock()
	err := p.stream.Send(resp)
	p.sendMu.Unlock()
	if err != nil {
		if result, acked := p.giveUp(id, ch); acked {
			return result
		}
		return fmt.Errorf("pluggable pub/sub: sending message to daprd on topic %s: %w", msg.Topic, err)
	}
	select {
	case err := <-ch:
		ackChans.Put(ch)
		return err
	case <-ctx.Done():
		if result, acked := p.giveUp(id, ch); acked {
			return result
		}
		return fmt.Errorf("pluggable pub/sub: waiting for daprd's ack on topic %s: %w", msg.Topic, ctx.Err())
	case <-p.done:
		if result, acked := p.giveUp(id, ch); acked {
			return result
		}
		return errStreamEnded
	}
}

// giveUp takes the handler's entry out of pending. When an ack took it first, that ack is about to
// send (without blocking) into ch: giveUp waits for it and reports its result (acked true).
func (p *pull) giveUp(id uint64, ch chan error) (result error, acked bool) {
	p.mu.Lock()
	_, mine := p.pending[id]
	delete(p.pending, id)
	p.mu.Unlock()
	if !mine {
		result = <-ch
	}
	ackChans.Put(ch)
	return result, !mine
}

// ack hands daprd's answer for message id to its waiting handler; false when no handler waits
// for that id (unknown, duplicate, or the handler gave up).
func (p *pull) ack(id string, ackErr *proto.AckMessageError) bool {
	n, err := strconv.ParseUint(id, 10, 64)
	if err != nil {
		return false
	}
	p.mu.Lock()
	ch, ok := p.pending[n]
	delete(p.pending, n)
	p.mu.Unlock()
	if !ok {
		return false
	}
	var result error
	if ackErr != nil {
		result = ackError(ackErr.GetMessage())
	}
	ch <- result // never blocks: one slot, one sender (the one that took the entry)
	return true
}

// pendingLen is the number of handlers waiting for an ack (tests: bounded memory).
func (p *pull) pendingLen() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.pending)
}
