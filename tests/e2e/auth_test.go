package e2e

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/mqdapr/mqdapr/broker"
)

// The identities of an authenticated stack (newAuthStack, newAuthStackOn): the components of every
// connector replica connect as connectorUser (both replicas share the app's keys), the test's
// publishers as devicesUser. Passwords are per stack, in files of the stack's folder.
const (
	connectorUser = "connector"
	devicesUser   = "devices"
)

// stackACL grants each identity what the connector's chain needs, nothing else (deny by default):
// the telemetry and the retained asset configuration, the dead-letter topic, the state store's
// request topic, its own response topic and the app's keys (daprd's `connector||` prefix, lock keys
// included) to the components; the telemetry and configuration topics to the publishers.
const stackACL = `
user connector
topic read devices/+/telemetry
topic read config/assets/+
topic write connector/rejected
topic write statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke
topic readwrite clients/%c/services/statestore/#
key readwrite connector||

user devices
topic write devices/+/telemetry
topic write config/assets/+
`

// enableAuth writes the stack's password file (bcrypt at its minimum cost: start-up stays fast),
// the clients' password files and the ACL, and adds the broker flags that use them.
func (s *stack) enableAuth() {
	s.t.Helper()
	users := filepath.Join(s.dir, "broker-passwd")
	for _, u := range []string{connectorUser, devicesUser} {
		pw := []byte(u + "-" + filepath.Base(s.dir)) // a different password per stack
		if err := broker.SetPassword(users, u, pw, bcrypt.MinCost); err != nil {
			s.t.Fatal(err)
		}
		if err := os.WriteFile(s.passwordFile(u), append(pw, '\n'), 0o600); err != nil {
			s.t.Fatal(err)
		}
	}
	acl := filepath.Join(s.dir, "broker-acl")
	if err := os.WriteFile(acl, []byte(stackACL), 0o600); err != nil {
		s.t.Fatal(err)
	}
	s.auth = true
	s.brokerArgs = append(s.brokerArgs, "-password-file", users, "-acl-file", acl)
}

// passwordFile is where the stack keeps user's password for its clients.
func (s *stack) passwordFile(user string) string {
	return filepath.Join(s.dir, user+".password")
}

// credentials adds user's credentials to component metadata when the stack authenticates.
func (s *stack) credentials(md map[string]string, user string) map[string]string {
	if s.auth {
		md["username"], md["passwordFile"] = user, s.passwordFile(user)
	}
	return md
}

// password is user's password for a test client ("" when the stack does not authenticate).
func (s *stack) password(t testing.TB, user string) string {
	if !s.auth {
		return ""
	}
	b, err := os.ReadFile(s.passwordFile(user))
	if err != nil {
		t.Fatal(err)
	}
	return string(b[:len(b)-1])
}

// An authenticated stack lets in only its identities: devicesim without credentials gets CONNACK
// 0x87, with the components' user and a wrong password 0x86, with its own credentials it
// publishes; and the ACL keeps the publishers' identity off the state store (its request topic is
// not granted: the publish counts as failed). What the connector and fault tests run on.
func TestAuthStackRefusesWithoutCredentials(t *testing.T) {
	s := newAuthStack(t)
	run := func(name string, args ...string) (int, string) {
		t.Helper()
		p := start(t, name, s.dir, nil, filepath.Join(bins.dir, "devicesim"),
			append([]string{"-broker", s.mqttURL(), "-client-id", name, "-rate", "0", "-count", "1"}, args...)...)
		select {
		case <-p.exited():
		case <-time.After(60 * time.Second):
			t.Fatalf("devicesim %s did not finish", name)
		}
		b, err := os.ReadFile(p.log)
		require.NoError(t, err)
		return p.cmd.ProcessState.ExitCode(), string(b)
	}
	code, out := run("anonymous")
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "CONNACK 0x87 not authorized")

	wrong := filepath.Join(t.TempDir(), "wrong")
	require.NoError(t, os.WriteFile(wrong, []byte("guessed\n"), 0o600))
	code, out = run("wrong", "-username", connectorUser, "-password-file", wrong)
	require.Equal(t, 1, code, out)
	require.Contains(t, out, "CONNACK 0x86 bad user name or password")

	own := []string{"-username", devicesUser, "-password-file", s.passwordFile(devicesUser)}
	code, out = run("own", own...)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "1 telemetry messages acked (0 invalid on purpose), 0 failed")

	code, out = run("store", append(own, "-topic-prefix", "statestore/v1", "-publish-config=false")...)
	require.Equal(t, 0, code, out)
	require.Contains(t, out, "0 telemetry messages acked (0 invalid on purpose), 1 failed")
	b, err := os.ReadFile(s.broker.log)
	require.NoError(t, err)
	assert.NotContains(t, string(b), "guessed", "no password in the broker's log")
}
