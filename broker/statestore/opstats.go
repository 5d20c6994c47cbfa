package statestore

import (
	"bytes"
	"sync/atomic"

	"github.com/mqdapr/mqdapr/internal/resp3"
)

// OpCommands are the command label values of OpCount, by index: the five commands, then "other"
// for an unknown verb or a request that does not parse.
var OpCommands = [...]string{"SET", "GET", "DEL", "VDEL", "KEYNOTIFY", "other"}

// OpResults are the result label values of OpCount, by index:
//   - ok: the command did what it was asked (SET, DEL, VDEL, GET of a present key, KEYNOTIFY);
//   - not_found: GET, DEL or VDEL of a missing key;
//   - not_applied: a condition was not met (SET NX/NEX/VEQ, VDEL of another value: `:-1`);
//   - not_authorized: refused by the Authorizer;
//   - error: any other error reply, or an RPC-level failure (`__stat` other than 200).
var OpResults = [...]string{"ok", "not_found", "not_applied", "not_authorized", "error"}

const opOther = len(OpCommands) - 1

// opStats counts executed commands by command and result: one atomic add per request.
type opStats [len(OpCommands)][len(OpResults)]atomic.Int64

var notAuthorized = resp3.Error(MsgNotAuthorized).Str

func opIndex(verb []byte) int {
	for i, c := range OpCommands[:opOther] {
		if string(verb) == c {
			return i
		}
	}
	return opOther
}

func (s *opStats) count(cmd int, rep reply) {
	r := 0 // ok
	switch v := rep.value; {
	case rep.status != "" && rep.status != "200", v.Kind == resp3.KindError && !bytes.Equal(v.Str, notAuthorized):
		r = 4
	case v.Kind == resp3.KindError:
		r = 3
	case v.Kind == resp3.KindInteger && v.Int == -1:
		r = 2
	case v.Kind == resp3.KindNullBulk, v.Kind == resp3.KindInteger && v.Int == 0 && (cmd == 2 || cmd == 3):
		r = 1
	}
	s[cmd][r].Add(1)
}

// OpCount is the number of requests with one command and result.
type OpCount struct {
	Command, Result string
	N               int64
}

// OpCounts returns the requests executed so far by command and result: every pair of OpCommands
// and OpResults, zeros included (a counter that exists from the start rates correctly).
func (e *Engine) OpCounts() []OpCount {
	out := make([]OpCount, 0, len(OpCommands)*len(OpResults))
	for c := range e.ops {
		for r := range e.ops[c] {
			out = append(out, OpCount{OpCommands[c], OpResults[r], e.ops[c][r].Load()})
		}
	}
	return out
}
