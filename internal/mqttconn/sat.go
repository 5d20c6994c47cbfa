package mqttconn

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/eclipse/paho.golang/autopaho"
	"github.com/eclipse/paho.golang/paho"
)

// reasonReauthenticate is the AUTH reason code a client sends to re-authenticate inside an open
// connection (MQTT v5 §3.15.2.1, §4.12.1).
const reasonReauthenticate = 0x19

// satAuther answers the broker's AUTH continuation with the current token. paho calls it for
// AUTH packets received during CONNECT and re-authentication.
type satAuther struct{ file string }

func (a satAuther) Authenticate(*paho.Auth) *paho.Auth {
	token, _ := os.ReadFile(a.file)
	return &paho.Auth{
		ReasonCode: 0x18, // continue authentication
		Properties: &paho.AuthProperties{AuthMethod: SATAuthMethod, AuthData: bytes.TrimSpace(token)},
	}
}

func (satAuther) Authenticated() {}

// readToken reads the service-account token; an empty file is an error, not an anonymous login.
func readToken(file string) ([]byte, error) {
	return readSecret("satAuthFile", file, "a Kubernetes service-account token")
}

// readPassword reads the password file; an empty file is an error, not a login without password.
func readPassword(file string) ([]byte, error) {
	return readSecret("passwordFile", file, "the password on its first line")
}

// readSecret is ReadSecretFile with errors that name the setting and what it wants.
func readSecret(setting, file, want string) ([]byte, error) {
	b, err := ReadSecretFile(file)
	if errors.Is(err, ErrEmptySecret) {
		return nil, fmt.Errorf("%w: %s=%q is empty; want %s", ErrSettings, setting, file, want)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %s=%q: %v", ErrSettings, setting, file, err)
	}
	return b, nil
}

// ErrEmptySecret is ReadSecretFile's error for a file holding nothing but white space.
var ErrEmptySecret = errors.New("empty secret file")

// ReadSecretFile reads a secret mounted as a file (a password, a token), white space around it
// trimmed; a file holding nothing else is ErrEmptySecret, never an empty credential. Errors name
// the file, never its content.
func ReadSecretFile(file string) ([]byte, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	if b = bytes.TrimSpace(b); len(b) == 0 {
		return nil, ErrEmptySecret
	}
	return b, nil
}

// watchToken re-authenticates inside the open connection whenever the token file changes, so that
// a rotated token never forces a reconnect (which would void every pending acknowledgement and
// cause a burst of redeliveries). It returns when ctx ends.
func (c *Conn) watchToken(ctx context.Context, cm *autopaho.ConnectionManager) {
	t := time.NewTicker(c.settings.SATRefreshInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		token, err := readToken(c.settings.SATAuthFile)
		if err != nil {
			c.log.Warnf("mqtt: cannot read the service-account token for re-authentication: %v", err)
			continue
		}
		c.mu.Lock()
		same := bytes.Equal(token, c.lastToken)
		c.mu.Unlock()
		if same || !c.connected.Load() {
			continue // unchanged, or the next CONNECT will carry it
		}
		actx, cancel := context.WithTimeout(ctx, 10*time.Second)
		resp, err := cm.Authenticate(actx, &paho.Auth{
			ReasonCode: reasonReauthenticate,
			Properties: &paho.AuthProperties{AuthMethod: SATAuthMethod, AuthData: token},
		})
		cancel()
		switch {
		case err != nil:
			c.log.Warnf("mqtt: re-authentication with the rotated token failed: %v", err)
		case !resp.Success:
			c.log.Errorf("mqtt: broker refused the rotated token: reason %s", ReasonString(resp.ReasonCode))
		default:
			c.mu.Lock()
			c.lastToken = token
			c.mu.Unlock()
			c.reauths.Add(1)
			c.log.Infof("mqtt: re-authenticated with the rotated service-account token")
		}
	}
}
