package kvservice

import (
	"crypto/rand"
	"net"
	"path/filepath"
	"testing"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/statestore"
)

// dialUser is dialAddr with a user name and password.
func dialUser(t *testing.T, addr, id, user, pass string) *client {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	c := &client{id: id, msgs: make(chan *paho.Publish, 1000), disconnected: make(chan byte, 1)}
	c.Client = paho.NewClient(paho.ClientConfig{
		ClientID: id, Conn: nc, OnClientError: func(error) {},
		OnPublishReceived: []func(paho.PublishReceived) (bool, error){func(pr paho.PublishReceived) (bool, error) {
			c.msgs <- pr.Packet
			return true, nil
		}},
	})
	ca, err := c.Connect(ctxT(t), &paho.Connect{ClientID: id, KeepAlive: 30, CleanStart: true,
		Username: user, UsernameFlag: true, Password: []byte(pass), PasswordFlag: true})
	require.NoError(t, err)
	require.Equal(t, byte(0), ca.ReasonCode)
	t.Cleanup(func() {
		_ = c.Disconnect(&paho.Disconnect{ReasonCode: 0})
		nc.Close()
		<-c.Done()
	})
	return c
}

// The ACL file's key rules through the key-value store, for two tenants whose user names are
// their daprd app ids (keys `<app id>||<key>`, the ETag lock `<key>\x00mqdapr-lock`): each reads
// and writes its own keys and their locks, and gets `-ERR not authorized`
// (docs/state-store-protocol.md#responses) for the other's, by GET, KEYNOTIFY, SET, DEL and VDEL; a
// request whose Response Topic is another client's is refused with PUBACK 0x87 (MQTT v5
// §3.4.2.1), so a request cannot inject answers into another tenant's subscriptions.
func TestACLTenantKeys(t *testing.T) {
	path := filepath.Join(t.TempDir(), "passwd")
	require.NoError(t, broker.SetPassword(path, "app1", []byte("p1"), bcrypt.MinCost))
	require.NoError(t, broker.SetPassword(path, "app2", []byte("p2"), bcrypt.MinCost))
	pf, err := broker.LoadPasswordFile(path)
	require.NoError(t, err)
	af, err := broker.ParseACLFile("acl", []byte(`
all
topic write statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke
topic readwrite clients/%c/#
key readwrite %u||
`))
	require.NoError(t, err)
	acl := broker.NewACL(nil, af, nil)
	f := newFixture(t, func(eo *statestore.Options, bo *broker.Options) {
		bo.Authenticator = broker.NewPasswordAuth(pf, false)
		bo.Authorizer = acl
		eo.Authorize = KeyAuthorization(acl)
	})
	addr := f.b.Addrs()[0]
	a := dialUser(t, addr, "app1-c", "app1", "p1")
	a.subscribe(t, responseTopic("app1-c"))
	b := dialUser(t, addr, "app2-c", "app2", "p2")
	b.subscribe(t, responseTopic("app2-c"))

	ok := func(c *client, want string, args ...string) {
		t.Helper()
		require.Equal(t, want, string(c.call(t, respArray(args...), "__ts", ts0).Payload), "%s %q", c.id, args)
	}
	ok(a, "+OK\r\n", "SET", "app1||k", "v1")
	ok(a, "+OK\r\n", "SET", "app1||k\x00mqdapr-lock", "owner") // the lock key of an ETag write
	ok(a, "$2\r\nv1\r\n", "GET", "app1||k")
	ok(a, "+OK\r\n", "KEYNOTIFY", "app1||k")
	ok(b, "+OK\r\n", "SET", "app2||k", "v2")
	for _, args := range [][]string{
		{"GET", "app1||k"}, {"KEYNOTIFY", "app1||k"}, {"SET", "app1||k", "x"}, {"DEL", "app1||k"},
		{"VDEL", "app1||k", "v1"}, {"SET", "app1||k\x00mqdapr-lock", "x"}, {"GET", "app1|k"},
	} {
		ok(b, "-ERR not authorized\r\n", args...)
	}
	ok(a, "$2\r\nv1\r\n", "GET", "app1||k") // nothing changed
	_, _, refused := acl.Refused()
	require.EqualValues(t, 7, refused)

	// app2 aims the response at app1's response topic: refused before the store runs it.
	corr := make([]byte, 16)
	_, _ = rand.Read(corr)
	r, err := b.Publish(ctxT(t), &paho.Publish{Topic: statestore.RequestTopic, QoS: 1, Payload: []byte(respArray("SET", "app2||k", "x")),
		Properties: &paho.PublishProperties{ResponseTopic: responseTopic("app1-c"), CorrelationData: corr}})
	require.NotNil(t, r, err)
	require.Equal(t, broker.CodeNotAuthorized, r.ReasonCode)
	ok(b, "$2\r\nv2\r\n", "GET", "app2||k") // the refused SET did not run

	// app1 got no key notification of app2's attempts and no foreign response: its next message
	// is the answer to its own next request.
	ok(a, "+OK\r\n", "SET", "app1||k2", "v")
	select {
	case p := <-a.msgs:
		t.Fatalf("unexpected message to app1 on %s: %q", p.Topic, p.Payload)
	default:
	}

	// app1's own change notifies its KEYNOTIFY registration; once the ACL no longer lets it read
	// the key, the registration gets nothing more (the grant is checked for each notification).
	ok(a, "+OK\r\n", "SET", "app1||k", "v3")
	n := a.next(t)
	require.Equal(t, statestore.NotifyTopic("app1-c", []byte("app1||k")), n.Topic)
	af2, err := broker.ParseACLFile("acl", []byte(`
all
topic write statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke
topic readwrite clients/%c/#
key write %u||
`))
	require.NoError(t, err)
	acl.SetFile(af2)
	ok(a, "+OK\r\n", "SET", "app1||k", "v4")
	ok(a, "-ERR not authorized\r\n", "GET", "app1||k") // would follow a notification of v4
	require.True(t, f.engine.Watching("app1-c", []byte("app1||k")), "the registration stays, silent")
}
