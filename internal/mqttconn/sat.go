package mqttconn

import (
	"bytes"
	"context"
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
	token, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: satAuthFile=%q: %v", ErrSettings, file, err)
	}
	token = bytes.TrimSpace(token)
	if len(token) == 0 {
		return nil, fmt.Errorf("%w: satAuthFile=%q is empty; want a Kubernetes service-account token", ErrSettings, file)
	}
	return token, nil
}

// readPassword reads the password file; an empty file is an error, not a login without password.
// The error names the file, never its content.
func readPassword(file string) ([]byte, error) {
	pw, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: passwordFile=%q: %v", ErrSettings, file, err)
	}
	pw = bytes.TrimSpace(pw)
	if len(pw) == 0 {
		return nil, fmt.Errorf("%w: passwordFile=%q is empty; want the password on its first line", ErrSettings, file)
	}
	return pw, nil
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
