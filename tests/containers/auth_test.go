package containers

import (
	"crypto/rand"
	"encoding/hex"
	"strings"
	"testing"

	"github.com/testcontainers/testcontainers-go"
	"golang.org/x/crypto/bcrypt"
)

// Where the containers of these tests find the credentials (files copied in before start).
const (
	brokerAuthDir  = "/etc/mqbroker"              // the broker's password file and ACL
	clientPassword = "/run/secrets/mqtt-password" // a client's password (passwordFile, -password-file)
	chainUser      = "connector"                  // every chain replica's components
	devicesUser    = "devicesim"                  // the publishers
	requestTopic   = "statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/command/invoke"
)

// brokerAuth is a broker's password file (fresh random passwords, bcrypt at its minimum cost) and
// ACL for one test: the broker image runs off loopback, where mqbroker requires authentication.
type brokerAuth struct {
	passwords map[string]string
	passwd    string
	acl       string
}

func newBrokerAuth(t *testing.T, acl string, users ...string) *brokerAuth {
	t.Helper()
	a := &brokerAuth{passwords: map[string]string{}, acl: acl}
	var passwd strings.Builder
	for _, u := range users {
		b := make([]byte, 12)
		_, _ = rand.Read(b)
		pw := hex.EncodeToString(b)
		hash, err := bcrypt.GenerateFromPassword([]byte(pw), bcrypt.MinCost)
		if err != nil {
			t.Fatal(err)
		}
		a.passwords[u] = pw
		passwd.WriteString(u + ":" + string(hash) + "\n")
	}
	a.passwd = passwd.String()
	return a
}

// brokerCmd is the broker image's default command with the password file and ACL, and /readyz on
// 127.0.0.1:9883 for the image's HEALTHCHECK (so no MQTT probe is refused every few seconds).
func brokerCmd() []string {
	return []string{"-addr", "0.0.0.0:1883", "-data-dir", "/var/lib/mqbroker",
		"-password-file", brokerAuthDir + "/passwd", "-acl-file", brokerAuthDir + "/acl", "-metrics-addr", "127.0.0.1:9883"}
}

// brokerFiles copies the password file and the ACL into the broker container.
func (a *brokerAuth) brokerFiles() testcontainers.CustomizeRequestOption {
	return testcontainers.WithFiles(
		testcontainers.ContainerFile{Reader: strings.NewReader(a.passwd), ContainerFilePath: brokerAuthDir + "/passwd", FileMode: 0o644},
		testcontainers.ContainerFile{Reader: strings.NewReader(a.acl), ContainerFilePath: brokerAuthDir + "/acl", FileMode: 0o644})
}

// secret copies user's password into a client container at clientPassword.
func (a *brokerAuth) secret(user string) testcontainers.CustomizeRequestOption {
	return testcontainers.WithFiles(testcontainers.ContainerFile{Reader: strings.NewReader(a.passwords[user] + "\n"),
		ContainerFilePath: clientPassword, FileMode: 0o644})
}

// chainACL grants the chain's identities what the connector needs: the components the telemetry,
// the asset configuration, the dead-letter topic, the state store's request and response topics
// and the app's keys (daprd's `connector||`, lock keys included); devicesim its topics.
const chainACL = `
user connector
topic read devices/+/telemetry
topic read config/assets/+
topic write connector/dead-letter
topic write ` + requestTopic + `
topic readwrite clients/%c/services/statestore/#
key readwrite connector||

user devicesim
topic write devices/+/telemetry
topic write config/assets/+
`
