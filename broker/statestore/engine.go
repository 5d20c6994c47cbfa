package statestore

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/mqdapr/mqdapr/internal/hlc"
	"github.com/mqdapr/mqdapr/internal/resp3"
)

// entry is one stored key.
type entry struct {
	key     string
	value   []byte
	version hlc.HLC
	fence   hlc.HLC // valid when fenced
	fenced  bool
	expires time.Time // zero: no TTL
	persist bool      // the key is in Options.Store
	heapIdx int       // index in Engine.deadlines, -1 when expires is zero
}

// Engine is the state store. Create it with NewEngine, call Load once if Options.Store is set, then
// serve requests with Handle or Submit. It starts no goroutines, except, with a BatchStore, the two
// of its group commit (at the first change to persist), which Close stops.
type Engine struct {
	opts  Options
	now   func() time.Time
	clock *hlc.Clock
	log   *slog.Logger
	batch BatchStore // Options.Store when it is one: changes are group committed (group.go)

	mu         sync.Mutex // guards everything below, and serialises calls into Options.Store
	commitCond *sync.Cond // on mu: something is staged, or the engine closed
	closed     bool
	staged     []Change      // applied in memory, not yet handed to BatchStore.Apply
	seq        uint64        // changes staged so far
	durable    uint64        // changes made durable (or undone after a failure) so far
	undo       []undoEntry   // how to undo the changes made since the last durable one, oldest first
	waiting    []waiter      // answers held for a change not yet durable, in order
	committing bool          // the group commit goroutines run
	answers    chan []waiter // commitLoop -> answerLoop
	stopped    chan struct{} // closed when answerLoop ends
	keys       map[string]*entry
	deadlines  deadlineHeap                   // entries with a TTL, earliest first
	watchers   map[string]map[string]uint64   // key -> client IDs registered by KEYNOTIFY -> their Request.Conn
	clientKeys map[string]map[string]struct{} // client ID -> keys it watches
	watchUser  map[string]string              // client ID -> user name of its latest KEYNOTIFY (for Authorize)
	watchCount int                            // registrations over all clients
	ops        opStats                        // requests by command and result (opstats.go)
}

// NewEngine validates opts and returns an empty engine. It does no I/O. Errors wrap
// ErrInvalidOptions.
func NewEngine(opts Options) (*Engine, error) {
	if err := opts.validate(); err != nil {
		return nil, err
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	clock, err := hlc.NewClock(hlc.Options{NodeID: opts.NodeID, Now: now, MaxSkew: opts.MaxClockSkew})
	if err != nil {
		return nil, fmt.Errorf("clock: %w: %w", err, ErrInvalidOptions)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	e := &Engine{
		opts:       opts,
		now:        now,
		clock:      clock,
		log:        log,
		keys:       make(map[string]*entry),
		watchers:   make(map[string]map[string]uint64),
		clientKeys: make(map[string]map[string]struct{}),
		watchUser:  make(map[string]string),
	}
	e.batch, _ = opts.Store.(BatchStore)
	e.commitCond = sync.NewCond(&e.mu)
	return e, nil
}

// Match reports whether topic is the state store request topic
// (docs/state-store-protocol.md#topics).
func (e *Engine) Match(topic string) bool { return topic == RequestTopic }

// Close makes every later Handle, Submit, Load and Expire fail with ErrClosed (Expire returns
// nothing). With a BatchStore it first lets the group commit finish what is staged and release the
// answers held for it, and waits for that; it must not be called from a Submit callback. Idempotent.
func (e *Engine) Close() error {
	e.mu.Lock()
	e.closed = true
	e.commitCond.Broadcast()
	stopped := e.stopped
	e.mu.Unlock()
	if stopped != nil {
		<-stopped
	}
	return nil
}

// Len returns the number of keys (expired keys not yet removed by Expire or Handle included).
func (e *Engine) Len() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.keys)
}

// Handle serves one request and waits for its answer: Submit, waiting for done.
func (e *Engine) Handle(ctx context.Context, req Request) (Result, error) {
	ch := make(chan Result, 1)
	if err := e.Submit(ctx, req, func(res Result) { ch <- res }); err != nil {
		return Result{}, err
	}
	return <-ch, nil
}

// Submit serves one request. It first expires due keys, then validates and executes the command.
//
// It returns an error, and never calls done, only when the request cannot be answered:
// ErrNotRequestTopic, ErrInvalidQoS, ErrMissingResponseTopic, ErrForbiddenResponseTopic (disconnect
// the client, spec docs/state-store-protocol.md#topics), ErrInvalidResponseTopic,
// ErrMissingCorrelationData or ErrClosed. Otherwise it calls done exactly once with the response
// (command errors in-band, docs/state-store-protocol.md#responses) and the notifications to
// publish: before it returns when every change is durable, or else, with a BatchStore, from the
// group commit's goroutine once the changes made so far (by this request or by any other that it
// could have observed) are durable; held answers are released in the order they were served. ctx is
// passed to Options.Store.
func (e *Engine) Submit(ctx context.Context, req Request, done func(Result)) error {
	if err := validateRequest(req); err != nil {
		return err
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return ErrClosed
	}
	now := e.now()
	notes := e.expireLocked(ctx, now)
	rep := e.execute(ctx, req, now)
	notes = append(notes, rep.notify...)
	res := Result{Response: responseMessage(req, rep), Notifications: notes}
	held := e.hold(req, res, done)
	e.mu.Unlock()
	if !held {
		done(res)
	}
	return nil
}

// validateRequest applies the MQTT-level rules of docs/state-store-protocol.md#topics and
// #mqtt-properties.
func validateRequest(req Request) error {
	if req.Topic != RequestTopic {
		return fmt.Errorf("topic %q, want %q: %w", req.Topic, RequestTopic, ErrNotRequestTopic)
	}
	// docs/state-store-protocol.md#mqtt-properties: QoS 1; a request at any other QoS fails.
	if req.QoS != 1 {
		return fmt.Errorf("request from %q at QoS %d: %w", req.ClientID, req.QoS, ErrInvalidQoS)
	}
	rt := req.Properties.ResponseTopic
	switch {
	case rt == "":
		return fmt.Errorf("request from %q: %w", req.ClientID, ErrMissingResponseTopic)
	case rt == RequestTopic:
		return fmt.Errorf("response topic is the request topic: %w", ErrForbiddenResponseTopic)
	case strings.HasPrefix(rt, NotifyTopicPrefix):
		return fmt.Errorf("response topic %q starts with %q: %w", rt, NotifyTopicPrefix, ErrForbiddenResponseTopic)
	case strings.ContainsAny(rt, "+#\x00"):
		return fmt.Errorf("response topic %q contains a wildcard or NUL: %w", rt, ErrInvalidResponseTopic)
	}
	if len(req.Properties.CorrelationData) == 0 {
		return fmt.Errorf("request from %q: %w", req.ClientID, ErrMissingCorrelationData)
	}
	return nil
}

// reply is the outcome of one command before it becomes a Message.
type reply struct {
	value      resp3.Value
	version    hlc.HLC // sent as __ts when hasVersion
	hasVersion bool
	status     string // "" means "200"
	statusMsg  string
	extra      []UserProperty
	notify     []Message
}

func errReply(msg string) reply { return reply{value: resp3.Error(msg)} }

func versioned(v resp3.Value, version hlc.HLC) reply {
	return reply{value: v, version: version, hasVersion: true}
}

// responseMessage builds the response PUBLISH (docs/state-store-protocol.md#mqtt-properties): QoS
// 1, correlation data echoed, content type application/octet-stream, user properties __stat,
// __protVer and, when the key has a version, __ts, in that order.
func responseMessage(req Request, rep reply) Message {
	status := rep.status
	if status == "" {
		status = "200"
	}
	user := make([]UserProperty, 0, 3+len(rep.extra))
	user = append(user, UserProperty{PropStatus, status})
	if rep.statusMsg != "" {
		user = append(user, UserProperty{PropStatusMessage, rep.statusMsg})
	}
	user = append(user, UserProperty{PropProtocolVersion, ProtocolVersion})
	user = append(user, rep.extra...)
	if rep.hasVersion {
		user = append(user, UserProperty{PropTimestamp, rep.version.String()})
	}
	var payload []byte
	if rep.value.Kind != resp3.KindInvalid {
		var err error
		payload, err = resp3.Encode(rep.value)
		if err != nil { // only the engine's own constant texts are encoded; unreachable
			panic(fmt.Sprintf("statestore: encoding a reply: %v", err))
		}
	}
	return Message{
		Topic:   req.Properties.ResponseTopic,
		QoS:     1,
		Payload: payload,
		Properties: Properties{
			CorrelationData: bytes.Clone(req.Properties.CorrelationData),
			ContentType:     ContentType,
			User:            user,
		},
	}
}

// execute runs one validated request with the lock held.
func (e *Engine) execute(ctx context.Context, req Request, now time.Time) (rep reply) {
	cmd := opOther
	defer func() { e.ops.count(cmd, rep) }()
	if v, ok := req.Properties.Get(PropProtocolVersion); ok {
		if major, _, _ := strings.Cut(v, "."); major != supportedMajor {
			// RPC-level error (docs/state-store-protocol.md#mqtt-properties): unsupported protocol version.
			return reply{
				status:    "505",
				statusMsg: fmt.Sprintf("protocol version %q is not supported; supported major versions: %s", v, supportedMajor),
				extra:     []UserProperty{{PropSupportedMajor, supportedMajor}, {PropRequestProtVer, v}},
			}
		}
	}
	args, err := resp3.DecodeArray(req.Payload)
	// docs/state-store-protocol.md#example-syntax-error: any malformed array.
	if err != nil || len(args) == 0 {
		return errReply(MsgSyntaxError)
	}
	c := command{req: req, args: args[1:], now: now}
	cmd = opIndex(args[0])
	switch string(args[0]) { // docs/state-store-protocol.md#commands: verbs are upper-case.
	case "SET":
		return e.set(ctx, c)
	case "GET":
		return e.get(c)
	case "DEL":
		return e.del(ctx, c)
	case "VDEL":
		return e.vdel(ctx, c)
	case "KEYNOTIFY":
		return e.keynotify(c)
	default:
		return errReply(MsgUnknownCommand)
	}
}
