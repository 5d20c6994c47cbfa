package statekv

import (
	"path/filepath"
	"testing"

	"github.com/dapr/components-contrib/state"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/kvservice"
	"github.com/mqdapr/mqdapr/broker/statestore"
)

// appACL grants each app (its user name is its daprd app id) the state store's request topic,
// its response topic (clients/<client id>/...) and the keys daprd writes for it (`<app id>||`),
// which also cover the ETag lock keys (`<key>\x00mqdapr-lock`). README#security shows it.
const appACL = `
all
topic write statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke
topic readwrite clients/%c/#
key readwrite %u||
`

// The component through mqbroker's password file and ACL file: with the credentials in its
// metadata (username/password) it reads, writes and deletes its app's keys, ETag writes and
// deletes included (they take the lock key); another app's keys are refused with the store's
// `-ERR not authorized` (docs/state-store-protocol.md#responses) as ErrStoreError, nothing
// written; wrong credentials fail Init with CONNACK 0x86 (MQTT v5 §3.2.2.2).
func TestStoreThroughACL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	require.NoError(t, broker.SetPassword(path, "app1", []byte("p1"), bcrypt.MinCost))
	require.NoError(t, broker.SetPassword(path, "app2", []byte("p2"), bcrypt.MinCost))
	pf, err := broker.LoadPasswordFile(path)
	require.NoError(t, err)
	af, err := broker.ParseACLFile("acl", []byte(appACL))
	require.NoError(t, err)
	acl := broker.NewACL(nil, af, nil)
	kb := startBrokerOpts(t, true, func(eo *statestore.Options) { eo.Authorize = kvservice.KeyAuthorization(acl) },
		func(o *broker.Options) { o.Authenticator, o.Authorizer = broker.NewPasswordAuth(pf, false), acl })

	s1 := newStore(t, props(kb.url(), "app1-0", "username", "app1", "password", "p1"))
	s2 := newStore(t, props(kb.url(), "app2-0", "username", "app2", "password", "p2"))
	ctx := t.Context()

	set(t, s1, "app1||k", "v1")
	res := get(t, s1, "app1||k")
	require.Equal(t, "v1", string(res.Data))
	require.NotNil(t, res.ETag)
	require.NoError(t, s1.Set(ctx, &state.SetRequest{Key: "app1||k", Value: []byte("v2"), ETag: res.ETag}), "an ETag write takes the lock key")
	res = get(t, s1, "app1||k")
	require.Equal(t, "v2", string(res.Data))
	require.NoError(t, s1.Delete(ctx, &state.DeleteRequest{Key: "app1||gone"}), "a delete takes the lock key too")

	set(t, s2, "app2||k", "other")
	_, err = s2.Get(ctx, &state.GetRequest{Key: "app1||k"})
	require.ErrorIs(t, err, ErrStoreError)
	require.ErrorContains(t, err, "not authorized")
	err = s2.Set(ctx, &state.SetRequest{Key: "app1||k", Value: []byte("x")})
	require.ErrorIs(t, err, ErrStoreError)
	err = s2.Delete(ctx, &state.DeleteRequest{Key: "app1||k"})
	require.Error(t, err)
	err = s2.Set(ctx, &state.SetRequest{Key: "app1||k", Value: []byte("x"), ETag: res.ETag})
	require.Error(t, err)
	require.Equal(t, "v2", string(get(t, s1, "app1||k").Data), "nothing of app2's was written")
	_, _, refused := acl.Refused()
	require.Positive(t, refused)

	bad := New(testLog)
	err = bad.Init(ctx, state.Metadata{Base: metadataBase(props(kb.url(), "app1-1", "username", "app1", "password", "wrong", "connectTimeout", "2s"))})
	require.Error(t, err)
	require.ErrorContains(t, err, "bad user name or password")
	_ = bad.Close()
}
