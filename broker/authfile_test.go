package broker

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/eclipse/paho.golang/paho"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"
)

// passwdFile writes a password file of user/password pairs (bcrypt at the minimum cost, to keep
// the tests quick; the format and the check are the same at every cost).
func passwdFile(t testing.TB, pairs ...string) *PasswordFile {
	t.Helper()
	path := filepath.Join(t.TempDir(), "passwd")
	for i := 0; i < len(pairs); i += 2 {
		require.NoError(t, SetPassword(path, pairs[i], []byte(pairs[i+1]), bcrypt.MinCost))
	}
	pf, err := LoadPasswordFile(path)
	require.NoError(t, err)
	return pf
}

func aclFile(t testing.TB, text string) *ACLFile {
	t.Helper()
	af, err := ParseACLFile("acl", []byte(text))
	require.NoError(t, err)
	return af
}

// Bad input: each malformed line is refused naming file:line and what is accepted; a hash never
// appears in the error.
func TestPasswordFileBadInput(t *testing.T) {
	const hash = "$2a$04$abcdefghijklmnopqrstuuJ1sxpSjdrdxGfT6bQ9cXe1n1iHo9l1K"
	for text, want := range map[string]string{
		"# ok\nalice\n":                 "passwd:2: want `<user name>:<bcrypt hash>`",
		"alice:plain\n":                 "passwd:1: user \"alice\": the hash is not a bcrypt hash",
		":" + hash + "\n":               "passwd:1: user name \"\": want a non-empty UTF-8 name without ':'",
		"a b:" + hash + "\n":            "passwd:1: user name \"a b\"",
		"x:" + hash + "\nx:" + hash:     "passwd:2: user \"x\" appears twice",
		"alice:$2a$99$" + hash[7:] + "": "passwd:1: user \"alice\": the hash is not a bcrypt hash",
	} {
		_, err := ParsePasswordFile("passwd", []byte(text))
		require.ErrorIs(t, err, ErrPasswordFile, text)
		require.ErrorContains(t, err, want, text)
		require.NotContains(t, err.Error(), hash[7:], "no hash in errors")
	}
	pf, err := ParsePasswordFile("passwd", []byte("\n# comment\nalice:"+hash+"\n"))
	require.NoError(t, err)
	require.Len(t, pf.Users, 1)

	// SetPassword replaces an entry in place and keeps the other lines; it refuses to rewrite a
	// file that does not parse.
	path := filepath.Join(t.TempDir(), "passwd")
	require.NoError(t, os.WriteFile(path, []byte("# users\nbob:"+hash+"\n"), 0o600))
	require.NoError(t, SetPassword(path, "alice", []byte("one"), bcrypt.MinCost))
	require.NoError(t, SetPassword(path, "alice", []byte("two"), bcrypt.MinCost))
	data, err := os.ReadFile(path)
	require.NoError(t, err)
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	require.Len(t, lines, 3)
	require.Equal(t, "# users", lines[0])
	require.Equal(t, "bob:"+hash, lines[1])
	require.NoError(t, bcrypt.CompareHashAndPassword([]byte(strings.TrimPrefix(lines[2], "alice:")), []byte("two")))
	st, err := os.Stat(path)
	require.NoError(t, err)
	require.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	require.NoError(t, os.WriteFile(path, []byte("garbage\n"), 0o600))
	require.ErrorContains(t, SetPassword(path, "alice", []byte("x"), bcrypt.MinCost), "not rewriting it")
}

func TestACLFileBadInput(t *testing.T) {
	for text, want := range map[string]string{
		"topic read a/#\n":                   "acl:1: a rule before any section",
		"user\n":                             "acl:1: want `user <name>`",
		"all\ntopic rw a\n":                  "acl:2: access \"rw\": want topic read|write|readwrite|deny <filter>",
		"all\ntopic read a/#/b\n":            "acl:2: topic filter \"a/#/b\" is not valid",
		"all\ntopic read\n":                  "acl:2: want topic read|write|readwrite|deny <filter>",
		"all\ntopic read $share/g/a\n":       "acl:2: topic filter \"$share/g/a\": give the filter without $share",
		"all\nkey deny a\n":                  "acl:2: `key deny` is not accepted",
		"all\nkey read \"a\n":                "acl:2: key prefix \"a: not a valid Go-quoted string",
		"client a*b\n":                       "acl:1: client pattern \"a*b\": '*' is accepted only at the end",
		"all\n\n# c\nsubscribe a\n":          "acl:4: unknown word \"subscribe\": want user, client, anonymous, all, topic or key",
		"anonymous x\n":                      "acl:1: `anonymous` takes no argument",
		"user a\ntopic read a/%u+/b\n":       "acl:2: topic filter \"a/%u+/b\" is not valid",
		"user a\ntopic readwrite a b\n":      "acl:2: want topic read|write|readwrite|deny <filter>: one topic filter",
		"user a\nkey readwrite app|| x\n":    "acl:2: want key read|write|readwrite <prefix>: one word",
		"user a\ntopic readwrite a\nfoo\n":   "acl:3: unknown word \"foo\"",
		"user a\ntopic readwrite a\nall x\n": "acl:3: `all` takes no argument",
	} {
		_, err := ParseACLFile("acl", []byte(text))
		require.ErrorIs(t, err, ErrACLFile, text)
		require.ErrorContains(t, err, want, text)
	}
}

// filterCovers: a subscription is granted only when every topic it can match is granted
// (MQTT v5 §4.7: '#' matches the parent level too, a first-level wildcard no '$' topic).
func TestFilterCovers(t *testing.T) {
	for _, c := range []struct {
		g, f string
		want bool
	}{
		{"a/#", "a/#", true}, {"a/#", "a", true}, {"a/#", "a/b/+", true}, {"a/+", "a/b", true},
		{"a/+", "a/+", true}, {"a/+", "a/#", false}, {"a/+", "a/b/c", false}, {"a/b", "a/+", false},
		{"#", "$SYS/x", false}, {"+/x", "$SYS/x", false}, {"#", "+/x", true}, {"a/b", "a/b", true},
		{"a/b", "a", false}, {"a", "a/b", false}, {"a/+/c", "a/b/c", true}, {"a/+/c", "a/+/+", false},
	} {
		require.Equal(t, c.want, filterCovers(c.g, c.f), "%q covers %q", c.g, c.f)
	}
}

// MQTT v5 §3.1.3.5, §3.2.2.2 (0x86 Bad User Name or Password, 0x87 Not authorized), [MQTT-3.2.2-7]
// (a refusing CONNACK closes the connection), over TCP with paho.golang: the password file decides;
// anonymous clients only when allowed; a reload (Set) applies to the next CONNECT.
func TestPasswordFileAuthPaho(t *testing.T) {
	pa := NewPasswordAuth(passwdFile(t, "alice", "s3cret", "bob", "hunter2"), false)
	b := newBroker(t, func(o *Options) { o.Authenticator = pa })
	addr := b.Addrs()[0]
	dialClient(t, b, "a1", withPassword("alice", "s3cret"))
	for name, opts := range map[string][]clientOpt{
		"wrong password": {withPassword("alice", "S3cret")},
		"unknown user":   {withPassword("mallory", "s3cret")},
		"other's":        {withPassword("bob", "s3cret")},
		"no password": {func(_ *paho.ClientConfig, c *paho.Connect) {
			c.Username, c.UsernameFlag = "alice", true
		}},
	} {
		c, err := tryClient(t, addr, "x-"+strings.ReplaceAll(name, " ", "-"), opts...)
		require.NoError(t, err, name)
		require.Equal(t, CodeBadUserNameOrPassword, c.connack.ReasonCode, name)
	}
	c, err := tryClient(t, addr, "anon")
	require.NoError(t, err)
	require.Equal(t, CodeNotAuthorized, c.connack.ReasonCode, "anonymous refused by default")
	require.EqualValues(t, 5, pa.Refused())

	pa.Set(passwdFile(t, "alice", "rotated"))
	c, err = tryClient(t, addr, "a2", withPassword("alice", "s3cret"))
	require.NoError(t, err)
	require.Equal(t, CodeBadUserNameOrPassword, c.connack.ReasonCode, "old password after reload")
	dialClient(t, b, "a3", withPassword("alice", "rotated"))

	pa.AllowAnonymous = true
	b2 := newBroker(t, func(o *Options) { o.Authenticator = NewPasswordAuth(nil, true) })
	dialClient(t, b2, "anon")
}

// Third-party clients: mosquitto_pub with -u/-P over MQTT v5 (CONNACK 0x86, §3.2.2.2) and 3.1.1
// (CONNACK return code 0x04 bad user name or password, 0x05 not authorized: MQTT 3.1.1 §3.2.2.3).
func TestPasswordFileMosquittoClients(t *testing.T) {
	pub := mosquittoClient(t, "mosquitto_pub")
	b := newBroker(t, func(o *Options) { o.Authenticator = NewPasswordAuth(passwdFile(t, "alice", "s3cret"), false) })
	host, port := v3SplitAddr(t, b.Addrs()[0])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run := func(v string, args ...string) (string, error) {
		out, err := exec.CommandContext(ctx, pub, append([]string{"-V", v, "-h", host, "-p", port, "-q", "1", "-t", "t/x", "-m", "m"}, args...)...).CombinedOutput()
		return string(out), err
	}
	for _, v := range []string{"mqttv5", "mqttv311"} {
		out, err := run(v, "-i", "ok-"+v, "-u", "alice", "-P", "s3cret")
		require.NoError(t, err, "%s: %s", v, out)
		out, err = run(v, "-i", "bad-"+v, "-u", "alice", "-P", "nope")
		require.Error(t, err, v)
		require.Contains(t, strings.ToLower(out), "bad user name or password", v)
		out, err = run(v, "-i", "anon-"+v)
		require.Error(t, err, v)
		require.Contains(t, strings.ToLower(out), "not authori", v) // "not authorised" (3.1.1) / "not authorized" (v5)
	}
	require.EqualValues(t, 2, b.Stats().Refused[codeName(CodeBadUserNameOrPassword)])
}

const tenantACL = `
# every user: its own tree, and the state store's response topic of its client ID
all
topic readwrite tenants/%u/#
topic readwrite clients/%c/#
topic write statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke
topic read public/#
key readwrite %u||
user admin
topic readwrite #
topic deny tenants/admin/secret/#
anonymous
topic read public/#
`

// A tenant cannot reach another tenant's topics, by SUBSCRIBE (SUBACK 0x87, MQTT v5 §3.9.3, for
// that filter alone), shared subscription (judged by its filter), PUBLISH (PUBACK 0x87, §3.4.2.1)
// or will (CONNACK 0x87, §3.2.2.2); retained messages on another tenant's topics stay unreachable;
// a deny rule wins over a grant; a reload applies to the next packet.
func TestACLTenantsPaho(t *testing.T) {
	acl := NewACL(nil, aclFile(t, tenantACL), nil)
	b := newBroker(t, func(o *Options) {
		o.Authenticator = NewPasswordAuth(passwdFile(t, "alice", "a", "bob", "b", "admin", "c"), true)
		o.Authorizer = acl
	})
	addr := b.Addrs()[0]
	bob := dialClient(t, b, "bob-1", withPassword("bob", "b"))
	r, err := bob.Publish(ctxT(t), &paho.Publish{Topic: "tenants/bob/r", QoS: 1, Retain: true, Payload: []byte("bob's")})
	require.NoError(t, err)
	require.Less(t, r.ReasonCode, byte(0x80))

	alice := dialClient(t, b, "alice-1", withPassword("alice", "a"))
	sa, err := alice.Subscribe(ctxT(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{
		{Topic: "tenants/alice/#", QoS: 1},
		{Topic: "tenants/bob/#", QoS: 1},
		{Topic: "tenants/+/r", QoS: 1},
		{Topic: "#", QoS: 1},
		{Topic: "$share/g/tenants/alice/jobs", QoS: 1},
		{Topic: "$share/g/tenants/bob/jobs", QoS: 1},
		{Topic: "public/news", QoS: 0},
	}})
	require.NotNil(t, sa, err) // paho also returns an error when a filter is refused
	require.Equal(t, []byte{1, CodeNotAuthorized, CodeNotAuthorized, CodeNotAuthorized, 1, CodeNotAuthorized, 0}, sa.Reasons)
	r, err = alice.Publish(ctxT(t), &paho.Publish{Topic: "tenants/bob/x", QoS: 1, Payload: []byte("forged")})
	require.NotNil(t, r, err) // paho also returns an error for a refusal
	require.Equal(t, CodeNotAuthorized, r.ReasonCode)
	r, err = alice.Publish(ctxT(t), &paho.Publish{Topic: "tenants/alice/x", QoS: 1, Payload: []byte("mine")})
	require.NoError(t, err)
	require.Less(t, r.ReasonCode, byte(0x80))
	require.Equal(t, "tenants/alice/x", alice.next(t).Topic, "the first message alice gets is her own: no retained message of bob's")

	will := func(topic string) clientOpt {
		return func(_ *paho.ClientConfig, c *paho.Connect) {
			c.WillMessage = &paho.WillMessage{Topic: topic, QoS: 1, Payload: []byte("gone")}
		}
	}
	c, err := tryClient(t, addr, "alice-2", withPassword("alice", "a"), will("tenants/bob/status"))
	require.NoError(t, err)
	require.Equal(t, CodeNotAuthorized, c.connack.ReasonCode, "a will on bob's tree")
	dialClient(t, b, "alice-3", withPassword("alice", "a"), will("tenants/alice/status"))

	// Anonymous: the anonymous section only.
	anon := dialClient(t, b, "anon-1")
	sa, err = anon.Subscribe(ctxT(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "public/#", QoS: 0}, {Topic: "tenants/#", QoS: 0}}})
	require.NotNil(t, sa, err) // paho also returns an error when a filter is refused
	require.Equal(t, []byte{0, CodeNotAuthorized}, sa.Reasons)

	// The deny rule wins over admin's "#".
	admin := dialClient(t, b, "admin-1", withPassword("admin", "c"))
	sa, err = admin.Subscribe(ctxT(t), &paho.Subscribe{Subscriptions: []paho.SubscribeOptions{{Topic: "tenants/+/r", QoS: 1}, {Topic: "tenants/#", QoS: 1}, {Topic: "tenants/admin/secret/x", QoS: 1}}})
	require.NotNil(t, sa, err) // paho also returns an error when a filter is refused
	require.Equal(t, []byte{1, CodeNotAuthorized, CodeNotAuthorized}, sa.Reasons)
	require.Equal(t, "bob's", string(admin.next(t).Payload), "granted: the retained message")

	pub, sub, _ := acl.Refused()
	require.EqualValues(t, 2, pub)
	require.EqualValues(t, 7, sub)

	// Reload: alice loses her tree.
	acl.SetFile(aclFile(t, "all\ntopic read public/#\n"))
	r, err = alice.Publish(ctxT(t), &paho.Publish{Topic: "tenants/alice/x", QoS: 1, Payload: []byte("mine")})
	require.NotNil(t, r, err) // paho also returns an error for a refusal
	require.Equal(t, CodeNotAuthorized, r.ReasonCode)
}

// mosquitto_sub and mosquitto_pub with -u/-P through the ACL, over MQTT v5 (SUBACK 0x87) and
// 3.1.1 (SUBACK return code 0x80 Failure, MQTT 3.1.1 §3.9.3): granted filters receive, refused ones
// are reported by the client.
func TestACLMosquittoClients(t *testing.T) {
	pubBin, subBin := mosquittoClient(t, "mosquitto_pub"), mosquittoClient(t, "mosquitto_sub")
	b := newBroker(t, func(o *Options) {
		o.Authenticator = NewPasswordAuth(passwdFile(t, "alice", "a", "bob", "b"), false)
		o.Authorizer = NewACL(nil, aclFile(t, tenantACL), nil)
	})
	host, port := v3SplitAddr(t, b.Addrs()[0])
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, v := range []string{"mqttv5", "mqttv311"} {
		common := []string{"-V", v, "-h", host, "-p", port}
		out, err := exec.CommandContext(ctx, subBin, append(common, "-u", "alice", "-P", "a", "-i", "denied-"+v, "-t", "tenants/bob/#", "-W", "5", "-C", "1")...).CombinedOutput()
		_ = err // mosquitto_sub reports the refusal and exits 0
		require.Contains(t, string(out), "All subscription requests were denied", "%s: %s", v, out)

		var got bytes.Buffer
		id := "alice-sub-" + v
		cmd := exec.CommandContext(ctx, subBin, append(common, "-u", "alice", "-P", "a", "-i", id, "-q", "1", "-t", "tenants/alice/#", "-v", "-C", "1", "-W", "25")...)
		cmd.Stdout, cmd.Stderr = &got, &got
		require.NoError(t, cmd.Start())
		require.Eventually(t, func() bool { return v3HasSub(b, id, "tenants/alice/#") }, waitFor, 5*time.Millisecond)
		// bob's publish into alice's tree is refused (v5: PUBACK 0x87; 3.1.1: acknowledged and
		// dropped, the protocol having no negative acknowledgement), then alice publishes.
		out, err = exec.CommandContext(ctx, pubBin, append(common, "-u", "bob", "-P", "b", "-q", "1", "-t", "tenants/alice/x", "-m", "forged")...).CombinedOutput()
		require.NoError(t, err, "%s: %s", v, out)
		if v == "mqttv5" {
			require.Contains(t, string(out), "Publish 1 failed: Not authorized", v)
		}
		out, err = exec.CommandContext(ctx, pubBin, append(common, "-u", "alice", "-P", "a", "-q", "1", "-t", "tenants/alice/x", "-m", "mine")...).CombinedOutput()
		require.NoError(t, err, "%s: %s", v, out)
		require.NoError(t, cmd.Wait(), "%s: %s", v, got.String())
		require.Equal(t, "tenants/alice/x mine", strings.TrimSpace(got.String()), v)
	}
}

// A client ID is no credential: another user's client may not take over (MQTT v5 §3.1.4-3 takeover)
// or clean (§3.1.2.4 Clean Start) a session, connected or kept offline; it gets CONNACK 0x87
// (§3.2.2.2) and the owner keeps its session and subscriptions. Found while writing the ACL: without
// this check bob took over alice's session and its granted subscriptions (this test failed).
func TestSessionOwnerByUser(t *testing.T) {
	b := newBroker(t, func(o *Options) {
		o.Authenticator = NewPasswordAuth(passwdFile(t, "alice", "a", "bob", "b"), false)
		o.Authorizer = NewACL(nil, aclFile(t, tenantACL), nil)
	})
	addr := b.Addrs()[0]
	alice := dialClient(t, b, "shared-id", withPassword("alice", "a"), withExpiry(300))
	alice.subscribe(t, "tenants/alice/#", 1)
	c, err := tryClient(t, addr, "shared-id", withPassword("bob", "b"))
	require.NoError(t, err)
	require.Equal(t, CodeNotAuthorized, c.connack.ReasonCode, "takeover by another user")
	r, err := alice.Publish(ctxT(t), &paho.Publish{Topic: "tenants/alice/x", QoS: 1, Payload: []byte("still here")})
	require.NoError(t, err)
	require.Less(t, r.ReasonCode, byte(0x80))
	require.Equal(t, "still here", string(alice.next(t).Payload))

	require.NoError(t, alice.Disconnect(&paho.Disconnect{}))
	waitOffline(t, b, "shared-id")
	c, err = tryClient(t, addr, "shared-id", withPassword("bob", "b"))
	require.NoError(t, err)
	require.Equal(t, CodeNotAuthorized, c.connack.ReasonCode, "clean start on another user's offline session")
	again := dialClient(t, b, "shared-id", withPassword("alice", "a"), withExpiry(300), resume())
	require.True(t, again.connack.SessionPresent)
	require.True(t, v3HasSub(b, "shared-id", "tenants/alice/#"))
}

// The session's owner is stored with it: after a restart on the same data directory another
// user still cannot take the session (MQTT v5 §4.1 session state kept across restarts).
func TestSessionOwnerSurvivesRestart(t *testing.T) {
	dir := t.TempDir()
	pa := NewPasswordAuth(passwdFile(t, "alice", "a", "bob", "b"), false)
	start := func() *Broker {
		o := NewDefaultOptions()
		o.Addr, o.DataDir, o.Authenticator = "127.0.0.1:0", dir, pa
		o.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		b, err := New(o)
		require.NoError(t, err)
		require.NoError(t, b.Start())
		return b
	}
	b := start()
	alice, err := tryClient(t, b.Addrs()[0], "kept", withPassword("alice", "a"), withExpiry(3600))
	require.NoError(t, err)
	require.Equal(t, CodeSuccess, alice.connack.ReasonCode)
	require.NoError(t, alice.Disconnect(&paho.Disconnect{}))
	require.NoError(t, b.Close())

	b2 := start()
	defer func() { require.NoError(t, b2.Close()) }()
	c, err := tryClient(t, b2.Addrs()[0], "kept", withPassword("bob", "b"), withExpiry(3600), resume())
	require.NoError(t, err)
	require.Equal(t, CodeNotAuthorized, c.connack.ReasonCode)
	c, err = tryClient(t, b2.Addrs()[0], "kept", withPassword("alice", "a"), withExpiry(3600), resume())
	require.NoError(t, err)
	require.Equal(t, CodeSuccess, c.connack.ReasonCode)
	require.True(t, c.connack.SessionPresent)
}

// After the ACL changes, RecheckSubscriptions removes the subscriptions it no longer grants, of
// connected and offline sessions: deliveries stop at once (MQTT v5 §4.7 matching is what a
// subscription receives; the grant is withdrawn), the still granted ones keep receiving.
func TestRecheckSubscriptions(t *testing.T) {
	acl := NewACL(nil, aclFile(t, tenantACL), nil)
	b := newBroker(t, func(o *Options) {
		o.Authenticator = NewPasswordAuth(passwdFile(t, "alice", "a", "bob", "b", "admin", "c"), false)
		o.Authorizer = acl
	})
	alice := dialClient(t, b, "alice-1", withPassword("alice", "a"))
	alice.subscribe(t, "tenants/alice/#", 1)
	alice.subscribe(t, "public/m", 1)
	bob := dialClient(t, b, "bob-1", withPassword("bob", "b"), withExpiry(300))
	bob.subscribe(t, "$share/g/tenants/bob/jobs", 1)
	require.NoError(t, bob.Disconnect(&paho.Disconnect{}))
	waitOffline(t, b, "bob-1")
	require.Zero(t, b.RecheckSubscriptions(ctxT(t)), "nothing changed")

	acl.SetFile(aclFile(t, "all\ntopic read public/#\nuser admin\ntopic readwrite #\n"))
	require.Equal(t, 2, b.RecheckSubscriptions(ctxT(t)))
	require.False(t, v3HasSub(b, "alice-1", "tenants/alice/#"))
	require.False(t, v3HasSub(b, "bob-1", "$share/g/tenants/bob/jobs"), "the offline session's too")
	require.True(t, v3HasSub(b, "alice-1", "public/m"))

	admin := dialClient(t, b, "admin-1", withPassword("admin", "c"))
	admin.publish(t, "tenants/alice/x", 1, "after the revocation")
	admin.publish(t, "public/m", 1, "marker")
	require.Equal(t, "marker", string(alice.next(t).Payload), "nothing on the revoked filter before the marker")
}

// Refusals are all counted, but logged at most refusalLogsPerSecond a second, with a summary of
// the others: a client looping on a denied topic cannot flood the log.
func TestACLRefusalLogBounded(t *testing.T) {
	var buf bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewTextHandler(writerFunc(func(p []byte) (int, error) {
		mu.Lock()
		defer mu.Unlock()
		return buf.Write(p)
	}), nil))
	acl := NewACL(nil, aclFile(t, "all\ntopic write ok/#\n"), log)
	clock := time.Unix(1000, 0)
	acl.refusals.now = func() time.Time { return clock }
	for range 1000 {
		require.Error(t, acl.AuthorizePublish(context.Background(), Client{ID: "c", Username: "u"}, "denied/x"))
	}
	pub, _, _ := acl.Refused()
	require.EqualValues(t, 1000, pub)
	clock = clock.Add(time.Second)
	require.Error(t, acl.AuthorizePublish(context.Background(), Client{ID: "c", Username: "u"}, "denied/x"))
	mu.Lock()
	defer mu.Unlock()
	require.Equal(t, refusalLogsPerSecond+1, strings.Count(buf.String(), "publish not authorized"))
	require.Contains(t, buf.String(), `msg="authorization refusals not logged (rate limit)" count=980`)
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// The cost of one publish decision: the -deny-publish rules alone (TopicRules, the floor) and the
// tenant ACL file (substitutions, three sections).
//
//	go test -run '^$' -bench BenchmarkAuthorizePublish -benchmem ./broker/
func BenchmarkAuthorizePublish(b *testing.B) {
	c := Client{ID: "alice-1", Username: "alice"}
	deny, err := NewTopicRules(nil, []string{"ro/#", "$SYS/#"})
	require.NoError(b, err)
	for _, bc := range []struct {
		name string
		az   Authorizer
	}{
		{"deny-rules", NewACL(deny, nil, nil)},
		{"acl-file", NewACL(deny, aclFile(b, tenantACL), nil)},
	} {
		b.Run(bc.name, func(b *testing.B) {
			for b.Loop() {
				if err := bc.az.AuthorizePublish(context.Background(), c, "tenants/alice/devices/7/telemetry"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// %u and %c are substituted; a value that would widen the rule (empty, or holding '/', '+', '#')
// makes the rule not apply; `key read ""` is every key; client patterns match exactly or by
// prefix.
func TestACLSubstitution(t *testing.T) {
	af := aclFile(t, "all\ntopic readwrite t/%u/%c/#\nkey read \"\"\nkey write k/%c|%u/\nclient dev-*\ntopic write devs/%c\nclient exact\ntopic write ex\n")
	pub := func(id, user, topic string) bool {
		ok, _ := af.publish(Client{ID: id, Username: user}, topic)
		return ok
	}
	require.True(t, pub("c1", "alice", "t/alice/c1/x"))
	require.False(t, pub("c1", "alice", "t/alice/c2/x"))
	require.False(t, pub("c1", "a/b", "t/a/b/c1/x"), "a user name with '/' widens nothing")
	require.False(t, pub("c1", "+", "t/+/c1/x"))
	require.False(t, pub("c1", "", "t//c1/x"), "no user name: a %u rule does not apply")
	require.True(t, pub("dev-7", "", "devs/dev-7"))
	require.False(t, pub("xdev-7", "", "devs/xdev-7"))
	require.True(t, pub("exact", "", "ex"))
	require.False(t, pub("exactly", "", "ex"))
	require.True(t, af.key(Client{ID: "c1", Username: "u"}, []byte("anything"), false))
	require.True(t, af.key(Client{ID: "c1", Username: "u"}, []byte("k/c1|u/x"), true))
	require.False(t, af.key(Client{ID: "c1", Username: "u"}, []byte("k/c1|v/x"), true))
}

// countingAuth counts the Authenticator's calls.
type countingAuth struct {
	Authenticator
	calls atomic.Int64
}

func (a *countingAuth) Authenticate(ctx context.Context, req *AuthRequest) (AuthResponse, error) {
	a.calls.Add(1)
	return a.Authenticator.Authenticate(ctx, req)
}

// After AuthFailureBurst wrong passwords from one address, its CONNECTs get CONNACK 0x9F
// Connection rate exceeded without reaching the Authenticator (no bcrypt per guess), the right
// password too, until a token comes back; another address is not held back, and a client that
// authenticates takes no token. MQTT 3.1.1 clients get return code 3 (server unavailable).
func TestAuthFailuresLimitedPerAddress(t *testing.T) {
	auth := &countingAuth{Authenticator: NewPasswordAuth(passwdFile(t, "alice", "s3cret"), false)}
	b := newBroker(t, func(o *Options) {
		o.Authenticator = auth
		o.AuthFailureBurst, o.AuthFailureRefill = 3, time.Hour
	})
	addr := b.Addrs()[0]
	for range 5 { // successes take nothing
		dialClient(t, b, "ok", withPassword("alice", "s3cret"))
	}
	for i := range 3 {
		c, err := tryClient(t, addr, fmt.Sprint("guess-", i), withPassword("alice", fmt.Sprint("guess", i)))
		require.NoError(t, err)
		require.Equal(t, CodeBadUserNameOrPassword, c.connack.ReasonCode, "guess %d", i)
	}
	calls := auth.calls.Load()
	for _, pw := range []string{"guess9", "s3cret"} {
		c, err := tryClient(t, addr, "held", withPassword("alice", pw))
		require.NoError(t, err)
		require.Equal(t, CodeConnectionRateExceeded, c.connack.ReasonCode, "password %q after the burst", pw)
	}
	require.Equal(t, calls, auth.calls.Load(), "refused before the Authenticator")

	_, port, _ := net.SplitHostPort(addr)
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}
	nc, err := d.Dial("tcp", net.JoinHostPort("127.0.0.1", port))
	require.NoError(t, err)
	c, err := clientOn(t, nc, "other-address", withPassword("alice", "s3cret"))
	require.NoError(t, err)
	require.Equal(t, CodeSuccess, c.connack.ReasonCode, "another address is not held back")

	v3 := dialV3(t, b)
	v3.write(t, v3Conn{id: "v3-held", flags: 0x02 | 0x80 | 0x40, keepAlive: 30, user: "alice", pw: "s3cret"}.bytes())
	first, body := v3.next(t)
	require.Equal(t, byte(0x20), first, "CONNACK")
	require.Equal(t, []byte{0, 3}, body, "MQTT 3.1.1: return code 3, server unavailable")
	require.EqualValues(t, 3, b.Stats().RefusedByCode[CodeConnectionRateExceeded])
}
