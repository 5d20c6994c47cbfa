package kvservice

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/statestore"
)

// keyPolicy is a broker authorization hook with key-level rules: client "reader" may only read
// keys under "plant/"; everyone else may do anything.
type keyPolicy struct{}

func (keyPolicy) AuthorizePublish(context.Context, broker.Client, string) error   { return nil }
func (keyPolicy) AuthorizeSubscribe(context.Context, broker.Client, string) error { return nil }
func (keyPolicy) AuthorizeKey(c broker.Client, key []byte, write bool) error {
	if c.ID != "reader" {
		return nil
	}
	if bytes.HasPrefix(key, []byte("plant/")) && !write {
		return nil
	}
	return errors.New("denied")
}

// Key-level authorization through the broker's authorization hook: read is GET and KEYNOTIFY,
// write is SET, DEL and VDEL; a refusal is `-ERR not authorized`
// (docs/state-store-protocol.md#responses).
func TestKeyLevelAuthorizationThroughBrokerHook(t *testing.T) {
	require.Nil(t, KeyAuthorization(nil), "no KeyAuthorizer: every key allowed")
	f := newFixture(t, func(eo *statestore.Options, bo *broker.Options) {
		bo.Authorizer = keyPolicy{}
		eo.Authorize = KeyAuthorization(bo.Authorizer)
	})
	w := f.dial(t, "writer")
	w.subscribe(t, responseTopic("writer"))
	r := f.dial(t, "reader")
	r.subscribe(t, responseTopic("reader"))

	require.Equal(t, "+OK\r\n", string(w.call(t, "*3\r\n$3\r\nSET\r\n$7\r\nplant/a\r\n$1\r\n1\r\n", "__ts", ts0).Payload))
	require.Equal(t, "$1\r\n1\r\n", string(r.call(t, "*2\r\n$3\r\nGET\r\n$7\r\nplant/a\r\n", "__ts", ts0).Payload))
	require.Equal(t, "+OK\r\n", string(r.call(t, "*2\r\n$9\r\nKEYNOTIFY\r\n$7\r\nplant/a\r\n", "__ts", ts0).Payload))
	for name, req := range map[string]string{
		"SET":         "*3\r\n$3\r\nSET\r\n$7\r\nplant/a\r\n$1\r\n2\r\n",
		"DEL":         "*2\r\n$3\r\nDEL\r\n$7\r\nplant/a\r\n",
		"VDEL":        "*3\r\n$4\r\nVDEL\r\n$7\r\nplant/a\r\n$1\r\n1\r\n",
		"GET other":   "*2\r\n$3\r\nGET\r\n$5\r\nother\r\n",
		"KEYNOTIFY o": "*2\r\n$9\r\nKEYNOTIFY\r\n$5\r\nother\r\n",
	} {
		require.Equal(t, "-ERR not authorized\r\n", string(r.call(t, req, "__ts", ts0).Payload), name)
	}
	require.Equal(t, "$1\r\n1\r\n", string(w.call(t, "*2\r\n$3\r\nGET\r\n$7\r\nplant/a\r\n", "__ts", ts0).Payload), "nothing changed")
}
