package mqttconn

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/mqdapr/mqdapr/internal/testutil"
)

func ptr[T any](v T) *T { return &v }

func TestBrokerURL(t *testing.T) {
	for _, tc := range []struct {
		name string
		s    Settings
		want string
		err  string
	}{
		{"default", Settings{}, "mqtt://localhost:1883", ""},
		{"tcp alias", Settings{URL: "tcp://h:1"}, "mqtt://h:1", ""},
		{"tls default port", Settings{URL: "ssl://h"}, "mqtts://h:8883", ""},
		{"plain default port", Settings{URL: "mqtt://h"}, "mqtt://h:1883", ""},
		{"ipv6", Settings{URL: "mqtts://[::1]:8883"}, "mqtts://[::1]:8883", ""},
		{"aio defaults", Settings{Hostname: "b"}, "mqtts://b:18883", ""},
		{"aio port only", Settings{TCPPort: ptr(uint16(1883)), UseTLS: ptr(false)}, "mqtt://aio-broker:1883", ""},
		{"aio and url", Settings{URL: "mqtt://h:1", Hostname: "b"}, "", "url and hostname/tcpPort/useTls both given"},
		{"aio port 0", Settings{TCPPort: ptr(uint16(0))}, "", "tcpPort=0"},
		{"no scheme", Settings{URL: "h:1883"}, "", "want scheme://host:port"},
		{"bad scheme", Settings{URL: "ws://h:1"}, "", `scheme "ws" is not supported`},
		{"no host", Settings{URL: "mqtt://:1883"}, "", "has no host"},
		{"path", Settings{URL: "mqtt://h:1/x"}, "", "has a path"},
		{"credentials", Settings{URL: "mqtt://u:p@h:1"}, "", "carries credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u, err := tc.s.BrokerURL()
			if tc.err != "" {
				require.Error(t, err)
				assert.ErrorIs(t, err, ErrSettings)
				assert.Contains(t, err.Error(), tc.err)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tc.want, u.String())
		})
	}
}

func TestValidate(t *testing.T) {
	base := DefaultSettings()
	for _, tc := range []struct {
		name   string
		mutate func(*Settings)
		err    string
	}{
		{"defaults", func(*Settings) {}, ""},
		{"keepalive 0", func(s *Settings) { s.KeepAlive = 0 }, "keepAlive=0s: want from 1s to 65535s"},
		{"keepalive too long", func(s *Settings) { s.KeepAlive = 65536 * time.Second }, "want from 1s to 65535s"},
		{"session expiry 0", func(s *Settings) { s.SessionExpiry = 0 }, "want at least 1s"},
		{"session expiry huge", func(s *Settings) { s.SessionExpiry = 5000000000 * time.Second }, "want at most 4294967295s"},
		{"cert without key", func(s *Settings) { s.URL = "mqtts://h"; s.ClientCert = "x" }, "must be given together"},
		{"both CA forms", func(s *Settings) { s.URL = "mqtts://h"; s.CACert = "x"; s.CAFile = "y" }, "caCert or caFile, not both"},
		{"tls material on plain url", func(s *Settings) { s.CAFile = "y" }, "not a TLS one"},
		{"sat and password", func(s *Settings) { s.SATAuthFile = "f"; s.Username = "u" }, "one authentication method"},
		{"password and password file", func(s *Settings) { s.Username = "u"; s.Password = "p"; s.PasswordFile = "f" }, "password and passwordFile both given"},
		{"password file without user", func(s *Settings) { s.PasswordFile = "f" }, "passwordFile=\"f\" without username"},
		{"sat and password file", func(s *Settings) { s.SATAuthFile = "t"; s.Username = "u"; s.PasswordFile = "f" }, "one authentication method"},
		{"sat refresh too fast", func(s *Settings) { s.SATRefreshInterval = time.Millisecond }, "satRefreshInterval"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := base
			tc.mutate(&s)
			err := s.Validate()
			if tc.err == "" {
				require.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, ErrSettings)
			assert.Contains(t, err.Error(), tc.err)
		})
	}
}

func TestResolveClientID(t *testing.T) {
	s := Settings{ConsumerID: "connector", ClientID: "pod-0"}
	ps, err := s.ResolveClientID(KindPubSub)
	require.NoError(t, err)
	kv, err := s.ResolveClientID(KindState)
	require.NoError(t, err)
	assert.Equal(t, "connector-pod-0-ps", ps)
	assert.Equal(t, "connector-pod-0-kv", kv)
	assert.NotEqual(t, ps, kv, "pub/sub and state never share a session")

	host, _ := os.Hostname()
	s = Settings{ConsumerID: "connector"}
	id, err := s.ResolveClientID(KindPubSub)
	require.NoError(t, err)
	assert.Equal(t, "connector-"+host+"-ps", id, "the host (pod) name is the default replica part")

	s = Settings{ConsumerID: "a/b", ClientID: "x"}
	_, err = s.ResolveClientID(KindPubSub)
	assert.ErrorIs(t, err, ErrSettings)
}

func TestTLSConfigLoadsCAFolder(t *testing.T) {
	a := testutil.GenerateTLS(t, "a")
	b := testutil.GenerateTLS(t, "b")
	dir := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(dir, "a.crt"), a.CAPEM, 0o600))
	require.NoError(t, os.WriteFile(filepath.Join(dir, "b.crt"), b.CAPEM, 0o600))
	require.NoError(t, os.Mkdir(filepath.Join(dir, "..data"), 0o700)) // hidden entries are skipped
	s := Settings{CAFile: dir}
	cfg, err := s.TLSConfig("h", true)
	require.NoError(t, err)
	require.NotNil(t, cfg.RootCAs)
	assert.Equal(t, "h", cfg.ServerName)

	empty := t.TempDir()
	require.NoError(t, os.WriteFile(filepath.Join(empty, "x.txt"), []byte("not a cert"), 0o600))
	s = Settings{CAFile: empty}
	_, err = s.TLSConfig("h", true)
	require.ErrorContains(t, err, "holds no PEM certificate")

	s = Settings{CAFile: "/nonexistent"}
	_, err = s.TLSConfig("h", true)
	require.ErrorContains(t, err, `caFile="/nonexistent"`)

	plain, err := (&Settings{}).TLSConfig("h", false)
	require.NoError(t, err)
	assert.Nil(t, plain)
}

// A URL carrying a password is refused, and so is one wrong in some other way as well; no error
// repeats the password (daprd logs Init errors).
func TestBrokerURLErrorsHideCredentials(t *testing.T) {
	const pw = "s3cret-pw-42"
	for _, raw := range []string{
		"mqtt://app:" + pw + "@127.0.0.1:1883",
		"mqtt://app:" + pw + "@[127.0.0.1:1883",  // does not parse
		"http://app:" + pw + "@127.0.0.1:1883",   // unsupported scheme
		"app:" + pw + "@127.0.0.1:1883",          // no scheme
		"mqtt://app:" + pw + "@",                 // no host
		"mqtt://app:" + pw + "@127.0.0.1:1883/x", // a path
		"mqtt://" + pw + "@127.0.0.1:1883",       // the password where the user name goes
	} {
		s := Settings{URL: raw}
		_, err := s.BrokerURL()
		require.ErrorIs(t, err, ErrSettings, raw)
		assert.NotContains(t, err.Error(), pw, raw)
		assert.Contains(t, err.Error(), "url=", raw)
	}
}
