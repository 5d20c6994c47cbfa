// Package mqttconn holds what mqdapr's components share about reaching an MQTT v5 broker: the
// connection metadata (mqdapr's own names and those of Azure IoT Operations' components), TLS,
// credentials, Kubernetes service-account-token authentication, client identity, and an autopaho
// connection that reconnects with exponential backoff and jitter.
package mqttconn

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Defaults. The AIO defaults apply as soon as one of AIO's metadata names is used, so a component
// YAML written for AIO's own component works by changing only its type.
const (
	DefaultURL            = "mqtt://localhost:1883"
	AIODefaultHostname    = "aio-broker"
	AIODefaultTCPPort     = 18883
	DefaultKeepAlive      = 30 * time.Second
	DefaultSessionExpiry  = 24 * time.Hour
	DefaultConnectTimeout = 30 * time.Second
	// SATAuthMethod is the MQTT v5 enhanced-authentication method of Kubernetes service-account tokens.
	SATAuthMethod = "K8S-SAT"
	// DefaultSATRefresh is how often the token file is checked for rotation.
	DefaultSATRefresh = 30 * time.Second
)

// Settings is the connection metadata both components accept. Field tags are the metadata keys.
type Settings struct {
	// URL of the broker: mqtt:// or tcp:// (plain), mqtts://, ssl:// or tls:// (TLS). Default
	// mqtt://localhost:1883. Mutually exclusive with hostname/tcpPort.
	URL string `mapstructure:"url"`
	// Hostname, TCPPort and UseTLS are the names of Azure IoT Operations' components. Using any of
	// them switches the defaults to AIO's: host aio-broker, port 18883, TLS on.
	Hostname string  `mapstructure:"hostname"`
	TCPPort  *uint16 `mapstructure:"tcpPort"`
	UseTLS   *bool   `mapstructure:"useTls"`

	// CAFile is a PEM file, or a folder of PEM files (a mounted trust-bundle config map), of CAs
	// that sign the broker's certificate. CACert is the same inline.
	CAFile string `mapstructure:"caFile"`
	CACert string `mapstructure:"caCert"`
	// ClientCert/ClientKey (inline PEM) or ClientCertFile/ClientKeyFile: a client certificate for
	// X.509 authentication.
	ClientCert     string `mapstructure:"clientCert"`
	ClientKey      string `mapstructure:"clientKey"`
	ClientCertFile string `mapstructure:"clientCertFile"`
	ClientKeyFile  string `mapstructure:"clientKeyFile"`
	// TLSServerName overrides the name checked against the broker's certificate.
	TLSServerName string `mapstructure:"tlsServerName"`
	// InsecureSkipVerify turns off every check of the broker's certificate (its CA and its name).
	// For a test set-up only: Dial warns about it each time.
	InsecureSkipVerify bool `mapstructure:"insecureSkipVerify"`

	Username string `mapstructure:"username"`
	Password string `mapstructure:"password"`
	// PasswordFile is a file holding the password (surrounding white space trimmed), read at every
	// CONNECT so that a rotated secret is used at the next reconnection; it keeps the password out
	// of the component YAML. Mutually exclusive with Password.
	PasswordFile string `mapstructure:"passwordFile"`
	// SATAuthFile is a Kubernetes service-account token file used with enhanced authentication
	// K8S-SAT. When the file changes, the client re-authenticates inside the open connection.
	SATAuthFile string `mapstructure:"satAuthFile"`
	// SATRefreshInterval is how often SATAuthFile is checked for rotation.
	SATRefreshInterval time.Duration `mapstructure:"satRefreshInterval"`

	// ConsumerID is set by daprd (the app id unless the component sets it).
	ConsumerID string `mapstructure:"consumerID"`
	// ClientID is the per-replica part of the MQTT client id (default: the host name, which is the
	// pod name in Kubernetes).
	ClientID string `mapstructure:"clientID"`

	KeepAlive      time.Duration `mapstructure:"keepAlive"`
	SessionExpiry  time.Duration `mapstructure:"sessionExpiry"`
	ConnectTimeout time.Duration `mapstructure:"connectTimeout"`
}

// DefaultSettings returns the settings used for absent keys.
func DefaultSettings() Settings {
	return Settings{
		KeepAlive:          DefaultKeepAlive,
		SessionExpiry:      DefaultSessionExpiry,
		ConnectTimeout:     DefaultConnectTimeout,
		SATRefreshInterval: DefaultSATRefresh,
	}
}

// ErrSettings is wrapped by every error about connection metadata.
var ErrSettings = errors.New("invalid connection metadata")

// AIOStyle reports whether any of Azure IoT Operations' metadata names is used.
func (s *Settings) AIOStyle() bool {
	return s.Hostname != "" || s.TCPPort != nil || s.UseTLS != nil
}

// BrokerURL resolves the broker address from url or from AIO's names (with AIO's defaults).
func (s *Settings) BrokerURL() (*url.URL, error) {
	if s.AIOStyle() {
		if s.URL != "" {
			return nil, fmt.Errorf("%w: url and hostname/tcpPort/useTls both given; use url, or AIO's names", ErrSettings)
		}
		host, port, useTLS := AIODefaultHostname, uint16(AIODefaultTCPPort), true
		if s.Hostname != "" {
			host = s.Hostname
		}
		if s.TCPPort != nil {
			port = *s.TCPPort
		}
		if s.UseTLS != nil {
			useTLS = *s.UseTLS
		}
		if port == 0 {
			return nil, fmt.Errorf("%w: tcpPort=0: want a port from 1 to 65535", ErrSettings)
		}
		scheme := "mqtt"
		if useTLS {
			scheme = "mqtts"
		}
		return &url.URL{Scheme: scheme, Host: net.JoinHostPort(host, strconv.Itoa(int(port)))}, nil
	}
	raw := s.URL
	if raw == "" {
		raw = DefaultURL
	}
	// Errors show the URL without its user information: a URL may carry a password, and daprd
	// logs Init errors.
	shown := redactRaw(raw)
	if !strings.Contains(raw, "://") {
		return nil, fmt.Errorf("%w: url=%q: want scheme://host:port with scheme mqtt, tcp, mqtts, ssl or tls", ErrSettings, shown)
	}
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // url.Error repeats the whole URL
		}
		return nil, fmt.Errorf("%w: url=%q: %v; want scheme://host:port", ErrSettings, shown, err)
	}
	switch strings.ToLower(u.Scheme) {
	case "mqtt", "tcp":
		u.Scheme = "mqtt"
	case "mqtts", "ssl", "tls":
		u.Scheme = "mqtts"
	default:
		return nil, fmt.Errorf("%w: url=%q: scheme %q is not supported; want mqtt, tcp, mqtts, ssl or tls", ErrSettings, shown, u.Scheme)
	}
	if u.Hostname() == "" {
		return nil, fmt.Errorf("%w: url=%q has no host", ErrSettings, shown)
	}
	if u.Port() == "" {
		port := "1883"
		if u.Scheme == "mqtts" {
			port = "8883"
		}
		u.Host = net.JoinHostPort(u.Hostname(), port)
	}
	if u.User != nil {
		return nil, fmt.Errorf("%w: url=%q carries credentials; use the username and password fields (secret references keep them out of YAML)", ErrSettings, redact(u))
	}
	if u.Path != "" && u.Path != "/" {
		return nil, fmt.Errorf("%w: url=%q has a path; want scheme://host:port", ErrSettings, shown)
	}
	u.Path = ""
	return u, nil
}

// redactRaw replaces the user information of a URL that may not parse ("user:password@" before
// the host) by REDACTED.
func redactRaw(raw string) string {
	start := 0
	if i := strings.Index(raw, "://"); i >= 0 {
		start = i + 3
	}
	end := len(raw)
	if i := strings.IndexAny(raw[start:], "/?#"); i >= 0 {
		end = start + i
	}
	at := strings.LastIndexByte(raw[start:end], '@')
	if at < 0 {
		return raw
	}
	return raw[:start] + "REDACTED" + raw[start+at:]
}

func redact(u *url.URL) string {
	c := *u
	c.User = url.User("REDACTED")
	return c.String()
}

// UsesTLS reports whether the resolved URL is a TLS one.
func UsesTLS(u *url.URL) bool { return u.Scheme == "mqtts" }

// Validate checks the settings without any I/O beyond stat-free parsing.
func (s *Settings) Validate() error {
	u, err := s.BrokerURL()
	if err != nil {
		return err
	}
	if !UsesTLS(u) && (s.CAFile != "" || s.CACert != "" || s.ClientCert != "" || s.ClientCertFile != "") {
		return fmt.Errorf("%w: TLS material given but the broker URL is not a TLS one; use mqtts:// (or useTls: true)", ErrSettings)
	}
	if !UsesTLS(u) && (s.InsecureSkipVerify || s.TLSServerName != "") {
		return fmt.Errorf("%w: insecureSkipVerify or tlsServerName given but the broker URL is not a TLS one; use mqtts:// (or useTls: true), or remove them", ErrSettings)
	}
	if s.KeepAlive < time.Second || s.KeepAlive > 65535*time.Second {
		return fmt.Errorf("%w: keepAlive=%s: want from 1s to 65535s", ErrSettings, s.KeepAlive)
	}
	if s.SessionExpiry > time.Duration(^uint32(0))*time.Second {
		return fmt.Errorf("%w: sessionExpiry=%s: want at most 4294967295s (never expires)", ErrSettings, s.SessionExpiry)
	}
	if s.SessionExpiry < time.Second {
		return fmt.Errorf("%w: sessionExpiry=%s: want at least 1s (0 would end the session, and the messages waiting in it, at every disconnect)", ErrSettings, s.SessionExpiry)
	}
	if s.ConnectTimeout <= 0 {
		return fmt.Errorf("%w: connectTimeout=%s: want a positive duration", ErrSettings, s.ConnectTimeout)
	}
	if s.SATRefreshInterval < 100*time.Millisecond {
		return fmt.Errorf("%w: satRefreshInterval=%s: want at least 100ms", ErrSettings, s.SATRefreshInterval)
	}
	if (s.ClientCert == "") != (s.ClientKey == "") {
		return fmt.Errorf("%w: clientCert and clientKey must be given together", ErrSettings)
	}
	if (s.ClientCertFile == "") != (s.ClientKeyFile == "") {
		return fmt.Errorf("%w: clientCertFile and clientKeyFile must be given together", ErrSettings)
	}
	if s.ClientCert != "" && s.ClientCertFile != "" {
		return fmt.Errorf("%w: give clientCert/clientKey or clientCertFile/clientKeyFile, not both", ErrSettings)
	}
	if s.CACert != "" && s.CAFile != "" {
		return fmt.Errorf("%w: give caCert or caFile, not both", ErrSettings)
	}
	if s.Password != "" && s.PasswordFile != "" {
		return fmt.Errorf("%w: password and passwordFile both given; give one", ErrSettings)
	}
	if s.PasswordFile != "" && s.Username == "" {
		return fmt.Errorf("%w: passwordFile=%q without username; the broker looks the password up by user name", ErrSettings, s.PasswordFile)
	}
	if s.SATAuthFile != "" && (s.Username != "" || s.Password != "" || s.PasswordFile != "") {
		return fmt.Errorf("%w: satAuthFile and username/password both given; the broker takes one authentication method", ErrSettings)
	}
	return nil
}
