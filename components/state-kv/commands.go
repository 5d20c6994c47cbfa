package statekv

import (
	"context"
	"fmt"
	"strconv"
	"time"

	"github.com/mqdapr/mqdapr/internal/resp3"
)

// The command error texts the component acts on (docs/state-store-protocol.md#responses).
const (
	msgFencingRequired = "a fencing token is required for this request"
	msgFencingLower    = "the request fencing token is a lower version than the fencing token protecting the resource"
)

// condition of a SET (docs/state-store-protocol.md#commands).
type condition string

const (
	always condition = ""
	nx     condition = "NX"
	nex    condition = "NEX" // absent, or equal to the value being set
)

// setResult is the outcome of a SET.
type setResult struct {
	applied bool   // +OK; false for :-1 (condition failed)
	version string // the key's version after the SET (or the stored one when not applied)
	fenced  string // non-empty: the store refused the fencing token with this text
}

// storeError turns an `-ERR` reply into an error naming the command and key.
func storeError(cmd, key string, v resp3.Value) error {
	return fmt.Errorf("%w: %s %q: %s", ErrStoreError, cmd, key, v.ErrorMessage())
}

func unexpected(cmd, key string, v resp3.Value) error {
	return fmt.Errorf("%w: %s %q answered with a %s", ErrUnexpectedResponse, cmd, key, v.Kind)
}

// isFenceRefusal reports whether an -ERR reply is one of the fencing refusals
// (docs/state-store-protocol.md#fencing-tokens).
func isFenceRefusal(v resp3.Value) bool {
	if v.Kind != resp3.KindError {
		return false
	}
	m := v.ErrorMessage()
	return m == msgFencingRequired || m == msgFencingLower
}

// set sends `SET key value [NX] [PX ms]`, under the lease l if not nil (its version as fencing
// token; never sent after its safe part, see request.sendBy); a fencing refusal is a result
// (setResult.fenced), other -ERR replies are errors wrapping ErrStoreError.
// persist asks for aio-persistence (when the persistent metadata allows it); lock keys are not
// persisted.
func (r *rpc) set(ctx context.Context, key string, value []byte, cond condition, ttl time.Duration, l *lease, persist bool) (setResult, error) {
	args := [][]byte{[]byte("SET"), []byte(key), value}
	if cond != always {
		args = append(args, []byte(cond))
	}
	if ttl > 0 {
		args = append(args, []byte("PX"), []byte(strconv.FormatInt(ttl.Milliseconds(), 10)))
	}
	rep, err := r.do(ctx, fenced(request{args: args, persist: persist}, l))
	if err != nil {
		return setResult{}, err
	}
	switch v := rep.value; {
	case v.Kind == resp3.KindSimpleString && string(v.Str) == "OK":
		return setResult{applied: true, version: rep.version}, nil
	case v.Kind == resp3.KindInteger && v.Int == -1:
		return setResult{version: rep.version}, nil
	case isFenceRefusal(v):
		return setResult{fenced: v.ErrorMessage()}, nil
	case v.Kind == resp3.KindError:
		return setResult{}, storeError("SET", key, v)
	default:
		return setResult{}, unexpected("SET", key, v)
	}
}

// fenced returns req carrying the lease's fencing token and its send deadline (req itself for nil).
func fenced(req request, l *lease) request {
	if l != nil {
		req.fence, req.sendBy = l.version, l.safeUntil
	}
	return req
}

// get sends `GET key`; found is false on a miss.
func (r *rpc) get(ctx context.Context, key string) (value []byte, version string, found bool, err error) {
	rep, err := r.do(ctx, request{args: [][]byte{[]byte("GET"), []byte(key)}})
	if err != nil {
		return nil, "", false, err
	}
	switch v := rep.value; v.Kind {
	case resp3.KindBulkString:
		if rep.version == "" {
			return nil, "", false, fmt.Errorf("%w: GET %q hit without a %s version", ErrUnexpectedResponse, key, propTimestamp)
		}
		return v.Str, rep.version, true, nil
	case resp3.KindNullBulk, resp3.KindNull:
		return nil, "", false, nil
	case resp3.KindError:
		return nil, "", false, storeError("GET", key, v)
	default:
		return nil, "", false, unexpected("GET", key, v)
	}
}

// delResult is the outcome of a DEL or VDEL.
type delResult struct {
	n      int64  // 1 deleted, 0 absent, -1 value differs (VDEL)
	fenced string // non-empty: the store refused the fencing token with this text
}

// del sends `DEL key`, or `VDEL key value` when value is not nil, under the lease l if not nil
// (as set).
func (r *rpc) del(ctx context.Context, key string, value []byte, l *lease) (delResult, error) {
	cmd := "DEL"
	args := [][]byte{[]byte(cmd), []byte(key)}
	if value != nil {
		cmd = "VDEL"
		args = [][]byte{[]byte(cmd), []byte(key), value}
	}
	rep, err := r.do(ctx, fenced(request{args: args}, l))
	if err != nil {
		return delResult{}, err
	}
	switch v := rep.value; {
	case v.Kind == resp3.KindInteger && v.Int >= -1 && v.Int <= 1:
		return delResult{n: v.Int}, nil
	case isFenceRefusal(v):
		return delResult{fenced: v.ErrorMessage()}, nil
	case v.Kind == resp3.KindError:
		return delResult{}, storeError(cmd, key, v)
	default:
		return delResult{}, unexpected(cmd, key, v)
	}
}
