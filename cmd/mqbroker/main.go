// Command mqbroker runs mqdapr's MQTT v5 broker.
//
//	mqbroker -addr 127.0.0.1:1883 -data-dir /var/lib/mqbroker -metrics-addr 127.0.0.1:9883   (/metrics, /healthz, /readyz)
//	mqbroker -ws-addr 127.0.0.1:8080   (also MQTT over WebSocket, subprotocol "mqtt", any path)
//	mqbroker -config mqbroker.json   (flags given on the command line override the file)
//	mqbroker healthcheck -addr 127.0.0.1:1883   (CONNECT/CONNACK; exit 0 when serving, 1 when not)
//	mqbroker passwd /etc/mqbroker/passwd alice   (add or replace a bcrypt entry; password on stdin)
//	mqbroker -addr 0.0.0.0:1883 -password-file passwd -acl-file acl   (off loopback: authentication)
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/statestore"
)

// config is the file format (JSON); every field matches a flag.
type config struct {
	Addr             string `json:"addr"`
	TLSAddr          string `json:"tls_addr"`
	TLSCert          string `json:"tls_cert"`
	TLSKey           string `json:"tls_key"`
	WSAddr           string `json:"ws_addr"`
	WSSAddr          string `json:"wss_addr"`
	WSOrigins        string `json:"ws_origins"`
	TLSClientCA      string `json:"tls_client_ca"`
	TLSClientAuth    string `json:"tls_client_auth"`
	DataDir          string `json:"data_dir"`
	MetricsAddr      string `json:"metrics_addr"`
	MaxConnections   int    `json:"max_connections"`
	MaxSessions      int    `json:"max_sessions"`
	MaxQueuedBytes   int64  `json:"max_queued_bytes"`
	MaxPacketSize    uint32 `json:"max_packet_size"`
	ReceiveMaximum   uint16 `json:"receive_maximum"`
	MaxSessionQueue  int    `json:"max_session_queue"`
	MaxGroupQueue    int    `json:"max_group_queue"`
	MaxSessionExpiry uint32 `json:"max_session_expiry"`
	V3SessionExpiry  uint32 `json:"v3_session_expiry"`
	CommitIntervalMS int    `json:"commit_interval_ms"`
	LogLevel         string `json:"log_level"`
	MaxKeepAlive     uint16 `json:"max_keepalive"`
	TopicAliasMax    uint16 `json:"topic_alias_max"`
	TopicAliasOut    uint16 `json:"topic_alias_out"`
	OverlapDelivery  string `json:"overlap_delivery"`
	// Refusals by topic filter, for every client (until the ACL file of issue 11).
	DenySubscribe []string `json:"deny_subscribe"`
	DenyPublish   []string `json:"deny_publish"`
	// Authentication and authorization (cmd/mqbroker/auth.go, broker/auth.go, broker/aclfile.go).
	PasswordFile   string `json:"password_file"`
	ACLFile        string `json:"acl_file"`
	AllowAnonymous *bool  `json:"allow_anonymous"` // nil: only when every listener is on loopback and no password file
	AuthWatchMS    int    `json:"auth_watch_ms"`
	AuthFailBurst  int    `json:"auth_failure_burst"`
	AuthFailRefill string `json:"auth_failure_refill"`
	// K8S-SAT enhanced authentication (cmd/mqbroker/sat.go, broker/satauth).
	SATAudience    string `json:"sat_audience"`
	SATTokenReview bool   `json:"sat_tokenreview"`
	SATKubeconfig  string `json:"sat_kubeconfig"`
	SATIssuer      string `json:"sat_issuer"`
	SATJWKSFile    string `json:"sat_jwks_file"`
	SATJWKSURL     string `json:"sat_jwks_url"`
	// The key-value store (Azure IoT Operations' state store protocol), served inside the broker.
	KV           bool   `json:"kv"`
	KVPersistAll bool   `json:"kv_persist_all"`
	KVNodeID     string `json:"kv_node_id"`
	KVMaxKeys    int    `json:"kv_max_keys"`
	KVMaxValue   int    `json:"kv_max_value_bytes"`
}

func main() {
	if len(os.Args) > 1 && os.Args[1] == "healthcheck" {
		os.Exit(healthcheckMain(os.Args[2:], os.Stdout))
	}
	if len(os.Args) > 1 && os.Args[1] == "passwd" {
		os.Exit(passwdMain(os.Args[2:], os.Stdin, os.Stdout, os.Stderr))
	}
	if err := run(os.Args[1:]); err != nil && !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintln(os.Stderr, "mqbroker:", err)
		os.Exit(1)
	}
}

// parseConfig reads flags and, with -config, the JSON file; explicit flags override the file.
func parseConfig(args []string) (config, error) {
	d := broker.NewDefaultOptions()
	kvd := statestore.NewDefaultOptions()
	cfg := config{
		Addr: d.Addr, TLSAddr: d.TLSAddr, MaxConnections: d.MaxConnections, MaxSessions: d.MaxSessions,
		MaxQueuedBytes: d.MaxQueuedBytes, MaxPacketSize: d.MaxPacketSize,
		ReceiveMaximum: d.ReceiveMaximum, MaxSessionQueue: d.MaxSessionQueue, MaxGroupQueue: d.MaxGroupQueue,
		MaxSessionExpiry: d.MaxSessionExpiry, V3SessionExpiry: d.V3SessionExpiry, LogLevel: "info",
		TopicAliasMax: d.TopicAliasMaximum, OverlapDelivery: string(d.OverlapDelivery),
		AuthWatchMS: 2000, AuthFailBurst: d.AuthFailureBurst, AuthFailRefill: d.AuthFailureRefill.String(),
		KV: true, KVNodeID: kvd.NodeID, KVMaxKeys: kvd.MaxKeys, KVMaxValue: kvd.MaxValueBytes,
	}
	fs := flag.NewFlagSet("mqbroker", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), `usage: mqbroker [flags]
       mqbroker healthcheck [-addr host:port]     probe a broker (exit 0 serving, 1 not)
       mqbroker passwd [-cost N] FILE USER        add or replace USER's bcrypt entry in FILE
                                                  (password from the terminal or stdin)
Authentication: a listener off loopback needs -password-file, -tls-client-ca (require), K8S-SAT
(-sat-audience with -sat-tokenreview, -sat-kubeconfig or -sat-issuer), or -allow-anonymous to let
every client in; -acl-file grants topics and keys per user, service account (namespace/name) and
client ID (deny by default). The files are reloaded on SIGHUP and when they change (README.md,
"Security").
`)
		fs.PrintDefaults()
	}
	configFile := fs.String("config", "", "JSON config file; flags given explicitly override it")
	fs.StringVar(&cfg.Addr, "addr", cfg.Addr, "MQTT listen address (empty disables)")
	fs.StringVar(&cfg.TLSAddr, "tls-addr", cfg.TLSAddr, "MQTT over TLS listen address (needs -tls-cert and -tls-key)")
	fs.StringVar(&cfg.TLSCert, "tls-cert", "", "TLS certificate file (PEM)")
	fs.StringVar(&cfg.TLSKey, "tls-key", "", "TLS key file (PEM)")
	fs.StringVar(&cfg.WSAddr, "ws-addr", "", `MQTT over WebSocket listen address, subprotocol "mqtt", any path (empty disables)`)
	fs.StringVar(&cfg.WSOrigins, "ws-origins", "", "comma-separated web origins (scheme://host[:port], or * for any) whose pages may connect over WebSocket, besides pages of the broker's own host and of localhost; clients that send no Origin (not browsers) are always served")
	fs.StringVar(&cfg.WSSAddr, "wss-addr", "", `MQTT over WebSocket over TLS listen address (needs -tls-cert and -tls-key; empty disables)`)
	fs.StringVar(&cfg.TLSClientCA, "tls-client-ca", "", "client CA bundle `FILE` (PEM): the TLS listener verifies client certificates against it, and a client with a verified certificate is its identity (subject CN, else first DNS or URI SAN) for the ACL")
	fs.StringVar(&cfg.TLSClientAuth, "tls-client-auth", "", "with -tls-client-ca: require (default; a TLS client without a certificate fails the handshake) or optional (one without a certificate authenticates like a plain TCP client)")
	fs.StringVar(&cfg.DataDir, "data-dir", "", "data directory for durable state (empty: in memory)")
	fs.StringVar(&cfg.MetricsAddr, "metrics-addr", "", "HTTP address serving Prometheus metrics at /metrics, liveness at /healthz and readiness at /readyz (empty disables)")
	fs.IntVar(&cfg.MaxConnections, "max-connections", cfg.MaxConnections, "maximum simultaneous connections")
	fs.IntVar(&cfg.MaxSessions, "max-sessions", cfg.MaxSessions, "maximum sessions, connected or kept for offline clients")
	fs.Int64Var(&cfg.MaxQueuedBytes, "max-queued-bytes", cfg.MaxQueuedBytes, "memory bound for all queued messages, bytes")
	fs.Func("max-packet-size", fmt.Sprintf("maximum packet size in bytes (default %d)", d.MaxPacketSize), uintFlag(&cfg.MaxPacketSize))
	fs.Func("receive-maximum", fmt.Sprintf("unacknowledged QoS 1/2 publishes accepted per client (default %d)", d.ReceiveMaximum), func(s string) error {
		var v uint32
		if err := uintFlag(&v)(s); err != nil || v > 65535 {
			return fmt.Errorf("want 1..65535, got %q", s)
		}
		cfg.ReceiveMaximum = uint16(v)
		return nil
	})
	fs.IntVar(&cfg.MaxSessionQueue, "max-session-queue", cfg.MaxSessionQueue, "QoS 1/2 messages kept per session")
	fs.IntVar(&cfg.MaxGroupQueue, "max-group-queue", cfg.MaxGroupQueue, "messages kept per shared-subscription group")
	fs.Func("max-session-expiry", fmt.Sprintf("cap on session expiry interval, seconds (default %d)", d.MaxSessionExpiry), uintFlag(&cfg.MaxSessionExpiry))
	fs.Func("v3-session-expiry", "seconds an MQTT 3.1.1 client's session (clean session 0) is kept after it disconnects; 3.1.1 has no expiry of its own, capped by -max-session-expiry (default: the cap)", uintFlag(&cfg.V3SessionExpiry))
	fs.IntVar(&cfg.CommitIntervalMS, "commit-interval-ms", 0, "minimum ms between two fsyncs of the data directory (more batching, more latency)")
	fs.StringVar(&cfg.LogLevel, "log-level", cfg.LogLevel, "debug, info, warn or error")
	fs.Func("max-keepalive", "cap on the keep alive a client may ask for, seconds; a client asking for more or for 0 gets it as Server Keep Alive (default 0: no cap)", uint16Flag(&cfg.MaxKeepAlive))
	fs.Func("topic-alias-max", fmt.Sprintf("Topic Alias Maximum announced in CONNACK: aliases a client may define per connection, 0 for none (default %d: at most 1 MiB of topics per connection)", d.TopicAliasMaximum), uint16Flag(&cfg.TopicAliasMax))
	fs.Func("topic-alias-out", "topic aliases the broker assigns on PUBLISHes to a client that accepts them, never more than its Topic Alias Maximum (default 0: none)", uint16Flag(&cfg.TopicAliasOut))
	fs.StringVar(&cfg.OverlapDelivery, "overlap-delivery", cfg.OverlapDelivery, "a message matching several subscriptions of one session: per-subscription (a copy each) or single (one copy with every subscription identifier)")
	// Repeatable: collected apart, and given on the command line they replace the file's list.
	var denySub, denyPub []string
	fs.Func("deny-subscribe", "refuse (SUBACK 0x87) a subscription overlapping this topic filter, for every client; repeatable", appendFlag(&denySub))
	fs.Func("deny-publish", "refuse (PUBACK/PUBREC 0x87; QoS 0 dropped) a publish, or a will, on a topic this filter matches, for every client; repeatable", appendFlag(&denyPub))
	fs.StringVar(&cfg.PasswordFile, "password-file", "", "password `FILE` (lines user:bcrypt-hash, written by 'mqbroker passwd'): clients must give a user name and password from it; reloaded on SIGHUP and when it changes")
	fs.StringVar(&cfg.ACLFile, "acl-file", "", "ACL `FILE` (user/client/anonymous/all sections of 'topic read|write|readwrite|deny <filter>' and 'key read|write|readwrite <prefix>' rules): deny by default; reloaded on SIGHUP and when it changes")
	fs.BoolFunc("allow-anonymous", "let clients in without a user name (-allow-anonymous=false to refuse them; default: true when every listener is on loopback and no -password-file or K8S-SAT is given; a listener off loopback without -password-file or K8S-SAT needs -allow-anonymous)", func(s string) error {
		v, err := strconv.ParseBool(s)
		if err != nil {
			return fmt.Errorf("want true or false, got %q", s)
		}
		cfg.AllowAnonymous = &v
		return nil
	})
	fs.StringVar(&cfg.SATAudience, "sat-audience", "", "K8S-SAT: the audience service-account tokens must be issued for (the projected token's audience); enables K8S-SAT enhanced authentication with -sat-tokenreview, -sat-kubeconfig or -sat-issuer")
	fs.BoolVar(&cfg.SATTokenReview, "sat-tokenreview", false, "K8S-SAT: verify tokens with the Kubernetes TokenReview API using the pod's in-cluster configuration (the broker's service account needs system:auth-delegator)")
	fs.StringVar(&cfg.SATKubeconfig, "sat-kubeconfig", "", "K8S-SAT: verify tokens with the TokenReview API of the cluster of this kubeconfig `FILE` (its current context) instead of the in-cluster configuration")
	fs.StringVar(&cfg.SATIssuer, "sat-issuer", "", "K8S-SAT outside a cluster: verify tokens as JWTs of this issuer (iss) against its JSON Web Key Set: -sat-jwks-file, -sat-jwks-url, or else the jwks_uri of its OpenID discovery document")
	fs.StringVar(&cfg.SATJWKSFile, "sat-jwks-file", "", "K8S-SAT with -sat-issuer: the issuer's JSON Web Key Set `FILE` (read again when a token names an unknown key id)")
	fs.StringVar(&cfg.SATJWKSURL, "sat-jwks-url", "", "K8S-SAT with -sat-issuer: the `URL` (https) of the issuer's JSON Web Key Set")
	fs.IntVar(&cfg.AuthFailBurst, "auth-failure-burst", cfg.AuthFailBurst, "failed authentications an IP address may have before its CONNECTs get CONNACK 0x9F (connection rate exceeded) without being checked, one more per -auth-failure-refill; -1: no limit")
	fs.StringVar(&cfg.AuthFailRefill, "auth-failure-refill", cfg.AuthFailRefill, "how long an address waits for each further failed authentication past -auth-failure-burst (a Go duration, e.g. 1s)")
	fs.IntVar(&cfg.AuthWatchMS, "auth-watch-ms", cfg.AuthWatchMS, "how often, in ms, the password and ACL files are checked for a change (0: on SIGHUP only)")
	fs.BoolVar(&cfg.KV, "kv", cfg.KV, "serve the key-value store (state store protocol) inside the broker")
	fs.BoolVar(&cfg.KVPersistAll, "kv-persist-all", cfg.KVPersistAll, "persist every key, not only those set with aio-persistence (needs -data-dir)")
	fs.StringVar(&cfg.KVNodeID, "kv-node-id", cfg.KVNodeID, "node id in key versions (no ':')")
	fs.IntVar(&cfg.KVMaxKeys, "kv-max-keys", cfg.KVMaxKeys, "maximum number of keys (0: no limit)")
	fs.IntVar(&cfg.KVMaxValue, "kv-max-value-bytes", cfg.KVMaxValue, "maximum value size in bytes (0: no limit)")
	if err := fs.Parse(args); err != nil {
		return cfg, err
	}
	if *configFile != "" {
		fromFile := cfg
		raw, err := os.ReadFile(*configFile)
		if err != nil {
			return cfg, err
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&fromFile); err != nil {
			return cfg, fmt.Errorf("config %q: %w", *configFile, err)
		}
		// The flag variables point into cfg: parsing again applies the explicit flags over the file.
		cfg = fromFile
		denySub, denyPub = nil, nil
		if err := fs.Parse(args); err != nil {
			return cfg, err
		}
	}
	if denySub != nil {
		cfg.DenySubscribe = denySub
	}
	if denyPub != nil {
		cfg.DenyPublish = denyPub
	}
	return cfg, nil
}

func run(args []string) error {
	cfg, err := parseConfig(args)
	if err != nil {
		return err
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(cfg.LogLevel)); err != nil {
		return fmt.Errorf("log level %q: want debug, info, warn or error", cfg.LogLevel)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	o := broker.NewDefaultOptions()
	o.Addr, o.TLSAddr, o.DataDir, o.Logger = cfg.Addr, cfg.TLSAddr, cfg.DataDir, log
	o.WSAddr, o.WSSAddr = cfg.WSAddr, cfg.WSSAddr
	if cfg.WSOrigins != "" {
		for _, origin := range strings.Split(cfg.WSOrigins, ",") {
			o.WSOrigins = append(o.WSOrigins, strings.TrimSpace(origin))
		}
	}
	o.MaxConnections, o.MaxPacketSize, o.ReceiveMaximum = cfg.MaxConnections, cfg.MaxPacketSize, cfg.ReceiveMaximum
	o.MaxSessions, o.MaxQueuedBytes = cfg.MaxSessions, cfg.MaxQueuedBytes
	o.CommitInterval = time.Duration(cfg.CommitIntervalMS) * time.Millisecond
	o.MaxSessionQueue, o.MaxGroupQueue, o.MaxSessionExpiry = cfg.MaxSessionQueue, cfg.MaxGroupQueue, cfg.MaxSessionExpiry
	o.V3SessionExpiry = cfg.V3SessionExpiry
	o.MaxKeepAlive, o.TopicAliasMaximum, o.TopicAliasOut = cfg.MaxKeepAlive, cfg.TopicAliasMax, cfg.TopicAliasOut
	if o.OverlapDelivery, err = broker.ParseOverlap(cfg.OverlapDelivery); err != nil {
		return fmt.Errorf("-overlap-delivery: %w", err)
	}
	listeners, clientAuth, err := unauthenticatedListeners(cfg)
	if err != nil {
		return err
	}
	auth, err := setupAuth(cfg, listeners, log)
	if err != nil {
		return err
	}
	refill, err := time.ParseDuration(cfg.AuthFailRefill)
	if err != nil || refill <= 0 {
		return fmt.Errorf("-auth-failure-refill %q: want a positive Go duration such as 1s or 500ms", cfg.AuthFailRefill)
	}
	if cfg.AuthFailBurst < -1 || cfg.AuthFailBurst == 0 {
		return fmt.Errorf("-auth-failure-burst %d: want a count ≥ 1, or -1 for no limit", cfg.AuthFailBurst)
	}
	o.AuthFailureBurst, o.AuthFailureRefill = cfg.AuthFailBurst, refill
	if auth.authenticator != nil {
		o.Authenticator = auth.authenticator
	}
	if auth.acl != nil {
		o.Authorizer = auth.acl
	}
	if cfg.WSSAddr != "" && (cfg.TLSCert == "" || cfg.TLSKey == "") {
		return fmt.Errorf("-wss-addr %q needs -tls-cert and -tls-key (the certificate it serves)", cfg.WSSAddr)
	}
	if cfg.TLSCert != "" || cfg.TLSKey != "" {
		// Reloaded by the watcher when the files change (tlsreload.go).
		if auth.tls, err = newTLSFiles(cfg, clientAuth); err != nil {
			return err
		}
		o.TLSConfig = auth.tls.config()
	}
	// /metrics, /healthz and /readyz (metrics.go): live from here on, ready once the broker serves.
	ops, err := startOps(cfg.MetricsAddr, log)
	if err != nil {
		return err
	}
	defer ops.close()
	kv, err := openKV(cfg, o.Authorizer, log)
	if err != nil {
		return err
	}
	defer kv.close()
	if kv != nil && kv.svc != nil {
		o.Services = append(o.Services, kv.svc)
	}
	b, err := broker.New(o)
	if err != nil {
		return err
	}
	if err := b.Start(); err != nil {
		return err
	}
	if kv != nil && kv.svc != nil {
		if err := kv.svc.Start(b); err != nil {
			_ = b.Close()
			return err
		}
	}
	// The bound addresses, one line, for scripts and tests that use port 0.
	fmt.Printf("listening %v\n", b.Addrs())
	if urls := b.WebSocketAddrs(); len(urls) > 0 {
		fmt.Printf("websocket %v\n", urls)
	}

	ops.ready(b, kv.engine, auth.collectors()...) // metrics.go

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	auth.aclReloaded = func() {
		if n := b.RecheckSubscriptions(ctx); n > 0 {
			log.Info("subscriptions no longer granted were removed", "count", n)
		}
	}
	auth.watch(ctx, time.Duration(cfg.AuthWatchMS)*time.Millisecond)
	<-ctx.Done()
	log.Info("shutting down")
	ops.stopping()
	return b.Close()
}

func uintFlag(dst *uint32) func(string) error {
	return func(s string) error {
		var v uint64
		if _, err := fmt.Sscanf(s, "%d", &v); err != nil || v > 1<<32-1 {
			return fmt.Errorf("want an unsigned 32-bit integer, got %q", s)
		}
		*dst = uint32(v)
		return nil
	}
}

// uint16Flag parses an unsigned 16-bit value (the flag package names the flag in the error).
func uint16Flag(dst *uint16) func(string) error {
	return func(s string) error {
		var v uint32
		if err := uintFlag(&v)(s); err != nil || v > 65535 {
			return fmt.Errorf("want 0..65535, got %q", s)
		}
		*dst = uint16(v)
		return nil
	}
}

// appendFlag collects a repeatable flag: each repetition adds one value.
func appendFlag(dst *[]string) func(string) error {
	return func(s string) error {
		*dst = append(*dst, s)
		return nil
	}
}
