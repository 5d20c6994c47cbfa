package statestore

import (
	"bytes"
	"context"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/mqdapr/mqdapr/internal/hlc"
	"github.com/mqdapr/mqdapr/internal/resp3"
)

// command is one decoded request: args excludes the verb.
type command struct {
	req  Request
	args [][]byte
	now  time.Time
}

// maxPXMillis keeps now+PX within time.Duration.
const maxPXMillis = math.MaxInt64 / int64(time.Millisecond)

// condition is a SET's NX/NEX option.
type condition uint8

const (
	condNone condition = iota
	condNX             // set only if absent
	condNEX            // set if absent or equal to the new value
)

// setArgs are SET's parsed arguments: `SET key value [NX | NEX] [PX ms]`
// (docs/state-store-protocol.md#commands).
type setArgs struct {
	key, value []byte
	cond       condition
	px         time.Duration // 0: no PX
}

// parseSet parses SET's arguments. The options may come in either order, each at most once; NX and
// NEX exclude each other. It returns the -ERR text on failure.
func parseSet(args [][]byte) (setArgs, string) {
	if len(args) < 2 || len(args) > 5 {
		return setArgs{}, MsgWrongArgs
	}
	s := setArgs{key: args[0], value: args[1]}
	hasPX := false
	for i := 2; i < len(args); i++ {
		switch string(args[i]) {
		case "NX", "NEX":
			if s.cond != condNone {
				return setArgs{}, MsgSyntaxError
			}
			s.cond = condNX
			if string(args[i]) == "NEX" {
				s.cond = condNEX
			}
		case "PX":
			if hasPX || i+1 >= len(args) {
				return setArgs{}, MsgSyntaxError
			}
			ms, ok := parsePX(args[i+1])
			if !ok {
				return setArgs{}, MsgSyntaxError
			}
			hasPX = true
			s.px = time.Duration(ms) * time.Millisecond
			i++
		default:
			return setArgs{}, MsgSyntaxError
		}
	}
	return s, ""
}

// parsePX accepts a positive decimal of ASCII digits no larger than maxPXMillis.
func parsePX(b []byte) (int64, bool) {
	if len(b) == 0 {
		return 0, false
	}
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
	}
	ms, err := strconv.ParseInt(string(b), 10, 64)
	if err != nil || ms <= 0 || ms > maxPXMillis {
		return 0, false
	}
	return ms, true
}

// stamps are a request's parsed __ts and __ft.
type stamps struct {
	version hlc.HLC // the clock reading after merging __ts; valid when hasTS
	hasTS   bool
	ft      hlc.HLC
	hasFT   bool
}

// readStamps validates __ts (required when needTS) and, when withFT, __ft
// (docs/state-store-protocol.md#mqtt-properties, #versions-hlc). A valid __ts is merged into the
// clock; the merged reading is the version a SET assigns. It returns the -ERR text on failure.
func (e *Engine) readStamps(req Request, needTS, withFT bool) (stamps, string) {
	var st stamps
	v, hasTS := req.Properties.Get(PropTimestamp)
	var ts hlc.HLC
	if hasTS {
		var err error
		if ts, err = hlc.Parse(v); err != nil {
			return stamps{}, MsgMalformedTimestamp
		}
		if err := e.clock.CheckSkew(ts); err != nil {
			return stamps{}, MsgTimestampSkew
		}
	} else if needTS {
		return stamps{}, MsgMissingTimestamp
	}
	if withFT {
		if msg := readFT(e.clock, req, &st); msg != "" {
			return stamps{}, msg
		}
	}
	if hasTS { // merge only once everything is valid, so a refused request leaves the clock alone
		version, err := e.clock.Update(ts)
		if err != nil {
			return stamps{}, MsgTimestampSkew
		}
		st.version, st.hasTS = version, true
	}
	return st, ""
}

func readFT(clock *hlc.Clock, req Request, st *stamps) string {
	v, ok := req.Properties.Get(PropFencingToken)
	if !ok {
		return ""
	}
	ft, err := hlc.Parse(v)
	if err != nil {
		return MsgMalformedTimestamp
	}
	if err := clock.CheckSkew(ft); err != nil {
		return MsgFencingTokenSkew
	}
	st.ft, st.hasFT = ft, true
	return ""
}

// checkFence applies docs/state-store-protocol.md#fencing-tokens to a write on ent: a fenced key
// needs __ft, at least as high as its token. It returns the -ERR text on failure.
func checkFence(ent *entry, st stamps) string {
	if ent == nil || !ent.fenced {
		return ""
	}
	if !st.hasFT {
		return MsgFencingRequired
	}
	if hlc.Compare(st.ft, ent.fence) < 0 {
		return MsgFencingTokenLower
	}
	return ""
}

// authorized calls the key-level authorization hook, if any.
func (e *Engine) authorized(c command, key []byte, access Access) bool {
	return e.opts.Authorize == nil || e.opts.Authorize(c.req.ClientID, c.req.Username, key, access)
}

// wantsPersist reports whether a SET is to be persisted
// (docs/state-store-protocol.md#mqtt-properties, `aio-persistence`).
func (e *Engine) wantsPersist(req Request) bool {
	if e.opts.Store == nil {
		return false
	}
	if e.opts.PersistAll {
		return true
	}
	v, ok := req.Properties.Get(PropPersistence)
	return ok && strings.EqualFold(v, "true")
}

// storeFailed logs a failure of Options.Store and returns the RPC-level reply for it (`__stat` 500,
// docs/state-store-protocol.md#mqtt-properties): nothing was changed. The error text is not sent;
// it may name the broker's files.
func (e *Engine) storeFailed(op string, err error) reply {
	e.log.Error("state store persistence failed; request refused", "op", op, "err", err)
	return persistFailedReply()
}

// persistFailedReply is the answer to a request whose change, or a change it could have observed,
// could not be made durable.
func persistFailedReply() reply {
	return reply{status: "500", statusMsg: "the state store could not persist the change"}
}

// set implements SET (docs/state-store-protocol.md#commands, #responses, #fencing-tokens).
func (e *Engine) set(ctx context.Context, c command) reply {
	s, msg := parseSet(c.args)
	if msg != "" {
		return errReply(msg)
	}
	if len(s.key) == 0 {
		return errReply(MsgKeyLengthZero)
	}
	if !e.authorized(c, s.key, AccessWrite) {
		return errReply(MsgNotAuthorized)
	}
	st, msg := e.readStamps(c.req, true, true)
	if msg != "" {
		return errReply(msg)
	}
	ent := e.keys[string(s.key)]
	if msg := checkFence(ent, st); msg != "" {
		return errReply(msg)
	}
	// docs/state-store-protocol.md#responses: a SET whose condition fails answers :-1 with the stored
	// version.
	if ent != nil && (s.cond == condNX || (s.cond == condNEX && !bytes.Equal(ent.value, s.value))) {
		return versioned(resp3.Int(-1), ent.version)
	}
	if (e.opts.MaxKeyBytes > 0 && len(s.key) > e.opts.MaxKeyBytes) ||
		(e.opts.MaxValueBytes > 0 && len(s.value) > e.opts.MaxValueBytes) ||
		(ent == nil && e.opts.MaxKeys > 0 && len(e.keys) >= e.opts.MaxKeys) {
		return errReply(MsgQuotaExceeded)
	}

	next := entry{
		key:     string(s.key),
		value:   bytes.Clone(s.value),
		version: st.version,
		persist: e.wantsPersist(c.req),
		heapIdx: -1,
	}
	if next.value == nil {
		next.value = []byte{}
	}
	if ent != nil {
		next.fence, next.fenced = ent.fence, ent.fenced
	}
	if st.hasFT && (!next.fenced || hlc.Compare(st.ft, next.fence) > 0) {
		// docs/state-store-protocol.md#fencing-tokens rules 1 and 2: store or raise the token
		next.fence, next.fenced = st.ft, true
	}
	if s.px > 0 {
		next.expires = c.now.Add(s.px)
	}
	switch {
	case next.persist:
		if err := e.stageSave(ctx, next.record()); err != nil {
			return e.storeFailed("save", err)
		}
	case ent != nil && ent.persist:
		if err := e.stageDelete(ctx, s.key); err != nil {
			return e.storeFailed("delete", err)
		}
	}

	e.track(next.key)
	if ent == nil {
		ent = &entry{heapIdx: -1}
		e.keys[next.key] = ent
	}
	idx := ent.heapIdx
	*ent = next
	ent.heapIdx = idx
	e.deadlines.set(ent)
	rep := versioned(resp3.OK(), ent.version)
	rep.notify = e.notifications(s.key, ent.version, notifySetPayload(ent.value))
	return rep
}

// record returns the persistence record of ent (sharing its byte slices, which the engine never
// modifies in place).
func (ent *entry) record() Record {
	return Record{
		Key:          []byte(ent.key),
		Value:        ent.value,
		Version:      ent.version,
		FencingToken: ent.fence,
		Fenced:       ent.fenced,
		ExpiresAt:    ent.expires,
	}
}

// get implements GET (docs/state-store-protocol.md#commands, #responses): the value and its
// version, or `$-1` without __ts.
func (e *Engine) get(c command) reply {
	if len(c.args) != 1 {
		return errReply(MsgWrongArgs)
	}
	key := c.args[0]
	if len(key) == 0 {
		return errReply(MsgKeyLengthZero)
	}
	if !e.authorized(c, key, AccessRead) {
		return errReply(MsgNotAuthorized)
	}
	if _, msg := e.readStamps(c.req, false, false); msg != "" {
		return errReply(msg)
	}
	ent := e.keys[string(key)]
	if ent == nil {
		return reply{value: resp3.NullBulk()}
	}
	return versioned(resp3.Bulk(ent.value), ent.version)
}

// del implements DEL (docs/state-store-protocol.md#commands, #responses, #fencing-tokens).
func (e *Engine) del(ctx context.Context, c command) reply {
	if len(c.args) != 1 {
		return errReply(MsgWrongArgs)
	}
	return e.deleteIf(ctx, c, c.args[0], nil)
}

// vdel implements VDEL (docs/state-store-protocol.md#commands, #responses, #fencing-tokens).
func (e *Engine) vdel(ctx context.Context, c command) reply {
	if len(c.args) != 2 {
		return errReply(MsgWrongArgs)
	}
	return e.deleteIf(ctx, c, c.args[0], c.args[1])
}

// deleteIf deletes key, if want is nil or equals the stored value. Absent: `:0`; value differs:
// `:-1` with the stored version; deleted: `:1` with the deleted version, and DELETE notifications.
// A fenced key needs __ft first (docs/state-store-protocol.md#fencing-tokens rule 3).
func (e *Engine) deleteIf(ctx context.Context, c command, key, want []byte) reply {
	if len(key) == 0 {
		return errReply(MsgKeyLengthZero)
	}
	if !e.authorized(c, key, AccessWrite) {
		return errReply(MsgNotAuthorized)
	}
	st, msg := e.readStamps(c.req, false, true)
	if msg != "" {
		return errReply(msg)
	}
	ent := e.keys[string(key)]
	if ent == nil {
		return reply{value: resp3.Int(0)}
	}
	if msg := checkFence(ent, st); msg != "" {
		return errReply(msg)
	}
	if want != nil && !bytes.Equal(ent.value, want) {
		return versioned(resp3.Int(-1), ent.version)
	}
	if ent.persist {
		if err := e.stageDelete(ctx, key); err != nil {
			return e.storeFailed("delete", err)
		}
	}
	e.remove(ent)
	rep := versioned(resp3.Int(1), ent.version)
	rep.notify = e.notifications(key, ent.version, notifyDeletePayload())
	return rep
}

// remove drops ent from the key map and the deadline heap (tracked for an undo, see track).
func (e *Engine) remove(ent *entry) {
	e.track(ent.key)
	delete(e.keys, ent.key)
	ent.expires = time.Time{}
	e.deadlines.set(ent)
}

// keynotify implements KEYNOTIFY and KEYNOTIFY STOP (docs/state-store-protocol.md#commands,
// #responses, #notifications).
func (e *Engine) keynotify(c command) reply {
	if len(c.args) != 1 && len(c.args) != 2 {
		return errReply(MsgWrongArgs)
	}
	stop := len(c.args) == 2
	if stop && string(c.args[1]) != "STOP" {
		return errReply(MsgSyntaxError)
	}
	key := c.args[0]
	if len(key) == 0 {
		return errReply(MsgKeyLengthZero)
	}
	if !e.authorized(c, key, AccessRead) {
		return errReply(MsgNotAuthorized)
	}
	if _, msg := e.readStamps(c.req, false, false); msg != "" {
		return errReply(msg)
	}
	if stop {
		if !e.unwatch(c.req.ClientID, string(key)) {
			return reply{value: resp3.Int(0)}
		}
		return reply{value: resp3.OK()}
	}
	if !e.watch(c.req.ClientID, c.req.Username, c.req.Conn, string(key)) {
		return errReply(MsgQuotaExceeded)
	}
	return reply{value: resp3.OK()}
}
