package mqttconn

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/crypto/bcrypt"

	"github.com/mqdapr/mqdapr/broker"
)

// passwordFile keeps the password out of the component YAML: the broker's password file accepts
// the user with the file's password (its trailing newline trimmed); a file with another password
// fails Dial at once with CONNACK 0x86; a missing or empty file fails before any connection,
// naming the file and never its content.
func TestPasswordFile(t *testing.T) {
	dir := t.TempDir()
	users := filepath.Join(dir, "passwd")
	require.NoError(t, broker.SetPassword(users, "app1", []byte("s3cret-pw"), bcrypt.MinCost))
	pf, err := broker.LoadPasswordFile(users)
	require.NoError(t, err)
	url := startAuthBroker(t, broker.NewPasswordAuth(pf, false))

	dial := func(content string, write bool) (*Conn, error) {
		file := filepath.Join(t.TempDir(), "password")
		if write {
			require.NoError(t, os.WriteFile(file, []byte(content), 0o600))
		}
		s := DefaultSettings()
		s.URL, s.Username, s.PasswordFile, s.ClientID, s.ConnectTimeout = url, "app1", file, "r1", 20*time.Second
		return Dial(t.Context(), Options{Settings: s, Kind: KindPubSub, NoSession: true})
	}

	c, err := dial("s3cret-pw\n", true)
	require.NoError(t, err)
	assert.True(t, c.Connected())
	require.NoError(t, c.Close(context.Background()))

	start := time.Now()
	_, err = dial("not-the-password", true)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "bad user name or password")
	assert.NotContains(t, err.Error(), "not-the-password")
	assert.Less(t, time.Since(start), 10*time.Second, "a refused password fails fast, not after connectTimeout")

	for _, tc := range []struct {
		name, content string
		write         bool
		want          string
	}{
		{"missing", "", false, "no such file"},
		{"empty", " \n", true, "is empty"},
	} {
		_, err := dial(tc.content, tc.write)
		require.Error(t, err, tc.name)
		assert.ErrorIs(t, err, ErrSettings, tc.name)
		assert.Contains(t, err.Error(), "passwordFile=", tc.name)
		assert.Contains(t, err.Error(), tc.want, tc.name)
	}
}
