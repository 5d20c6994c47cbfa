package main

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/term"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/satauth"
)

// onLoopback reports whether a listen address accepts loopback connections only ("localhost",
// 127.0.0.0/8, ::1). An empty host ("":1883) listens on every interface.
func onLoopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	return err == nil && broker.LoopbackHost(host)
}

// authSetup is what the password and ACL files configure, and what reloads them.
type authSetup struct {
	auth          *broker.PasswordAuth // nil: no password file
	authenticator broker.Authenticator // what the broker gets: auth, CertAuth over it, or nil
	acl           *broker.ACL          // nil: no ACL file and no deny rule
	cfg           config
	log           *slog.Logger
	sums          map[string][sha256.Size]byte // content of each file last loaded (or tried)
	tls           *tlsFiles                    // nil: no TLS listener
	// aclReloaded is called after a new ACL file is in force (the broker rechecks subscriptions).
	aclReloaded func()
}

// setupAuth builds the Authenticator and Authorizer from cfg and decides anonymous access:
// - with -password-file, only its users get in; anonymous clients too with -allow-anonymous;
// - without one, anonymous clients get in when every MQTT listener is on loopback, or with an
// explicit -allow-anonymous; a listener elsewhere without either is an error (the broker does not
// start), so that a broker reachable from the network never lets everyone in by default.
func setupAuth(cfg config, listeners []string, log *slog.Logger) (*authSetup, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	s := &authSetup{cfg: cfg, log: log, sums: map[string][sha256.Size]byte{}}
	verifier, err := satVerifier(cfg) // sat.go; nil without K8S-SAT
	if err != nil {
		return nil, err
	}
	if cfg.PasswordFile != "" {
		pf, err := s.loadPasswords()
		if err != nil {
			return nil, err
		}
		s.auth = broker.NewPasswordAuth(pf, cfg.AllowAnonymous != nil && *cfg.AllowAnonymous)
	} else if (cfg.AllowAnonymous == nil || !*cfg.AllowAnonymous) && verifier == nil {
		for _, l := range listeners {
			if !onLoopback(l) {
				return nil, fmt.Errorf("listener %s is not on loopback and no -password-file is given: authentication is required off loopback; "+
					"give -password-file (entries written by `mqbroker passwd`), K8S-SAT (-sat-audience with -sat-tokenreview or -sat-issuer), or -allow-anonymous to let every client in", l)
			}
		}
	}
	var rules *broker.TopicRules
	if len(cfg.DenySubscribe) > 0 || len(cfg.DenyPublish) > 0 {
		var err error
		if rules, err = broker.NewTopicRules(cfg.DenySubscribe, cfg.DenyPublish); err != nil {
			return nil, fmt.Errorf("-deny-subscribe/-deny-publish: %w", err)
		}
	}
	var af *broker.ACLFile
	if cfg.ACLFile != "" {
		var err error
		if af, err = s.loadACL(); err != nil {
			return nil, err
		}
		if cfg.PasswordFile == "" && cfg.TLSClientCA == "" && verifier == nil {
			log.Warn("-acl-file without -password-file, -tls-client-ca or K8S-SAT: user names are not verified, any client can claim one")
		}
	}
	if rules != nil || af != nil {
		s.acl = broker.NewACL(rules, af, log)
	}
	// Without a password file, anonymous clients are let in by default only when no other
	// authentication is configured (K8S-SAT makes them explicit with -allow-anonymous).
	anonymous := cfg.AllowAnonymous == nil || *cfg.AllowAnonymous
	if verifier != nil {
		anonymous = cfg.AllowAnonymous != nil && *cfg.AllowAnonymous
	}
	if cfg.TLSClientCA != "" {
		// Certificates first; a client without one goes to the password file, or is let in
		// anonymously under the same policy as without certificates.
		next := s.auth
		if next == nil {
			next = broker.NewPasswordAuth(nil, anonymous)
		}
		s.authenticator = &broker.CertAuth{Next: next}
	} else if s.auth != nil {
		s.authenticator = s.auth
	}
	if verifier != nil {
		// K8S-SAT for clients that give that method; the others as configured above.
		next := s.authenticator
		if next == nil {
			next = broker.NewPasswordAuth(nil, anonymous)
		}
		s.authenticator = &satauth.Authenticator{Verifier: verifier, Next: next}
	}
	return s, nil
}

// unauthenticatedListeners lists the MQTT listeners that do not authenticate clients by
// themselves (all but a TLS listener requiring client certificates), for the loopback check.
func unauthenticatedListeners(cfg config) ([]string, tls.ClientAuthType, error) {
	clientAuth, err := tlsClientAuth(cfg)
	if err != nil {
		return nil, 0, err
	}
	var out []string
	if cfg.Addr != "" {
		out = append(out, cfg.Addr)
	}
	if cfg.TLSAddr != "" && (cfg.TLSCert != "" || cfg.TLSKey != "") && clientAuth != tls.RequireAndVerifyClientCert {
		out = append(out, cfg.TLSAddr)
	}
	// MQTT over WebSocket authenticates like TCP; over TLS it shares the TLS listener's config,
	// client certificates included.
	if cfg.WSAddr != "" {
		out = append(out, cfg.WSAddr)
	}
	if cfg.WSSAddr != "" && clientAuth != tls.RequireAndVerifyClientCert {
		out = append(out, cfg.WSSAddr)
	}
	return out, clientAuth, nil
}

// tlsClientAuth maps -tls-client-auth; an error names what is accepted.
func tlsClientAuth(cfg config) (tls.ClientAuthType, error) {
	if cfg.TLSClientCA == "" {
		if cfg.TLSClientAuth != "" {
			return 0, fmt.Errorf("-tls-client-auth %q needs -tls-client-ca", cfg.TLSClientAuth)
		}
		return tls.NoClientCert, nil
	}
	if cfg.TLSCert == "" && cfg.TLSKey == "" {
		return 0, errors.New("-tls-client-ca needs the TLS listener: -tls-cert and -tls-key")
	}
	switch cfg.TLSClientAuth {
	case "", "require":
		return tls.RequireAndVerifyClientCert, nil
	case "optional":
		return tls.VerifyClientCertIfGiven, nil
	}
	return 0, fmt.Errorf("-tls-client-auth %q: want require or optional", cfg.TLSClientAuth)
}

// parseCAs parses a PEM bundle of CA certificates read from path.
func parseCAs(path string, data []byte) (*x509.CertPool, error) {
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(data) {
		return nil, fmt.Errorf("-tls-client-ca %s: no PEM certificate in it (want one or more -----BEGIN CERTIFICATE----- blocks)", path)
	}
	return pool, nil
}

func (s *authSetup) loadPasswords() (*broker.PasswordFile, error) {
	data, err := os.ReadFile(s.cfg.PasswordFile)
	if err != nil {
		return nil, fmt.Errorf("-password-file: %w", err)
	}
	s.sums[s.cfg.PasswordFile] = sha256.Sum256(data)
	return broker.ParsePasswordFile(s.cfg.PasswordFile, data)
}

func (s *authSetup) loadACL() (*broker.ACLFile, error) {
	data, err := os.ReadFile(s.cfg.ACLFile)
	if err != nil {
		return nil, fmt.Errorf("-acl-file: %w", err)
	}
	s.sums[s.cfg.ACLFile] = sha256.Sum256(data)
	return broker.ParseACLFile(s.cfg.ACLFile, data)
}

// changed reports whether path's content differs from what was last loaded from it.
func (s *authSetup) changed(path string) bool {
	data, err := os.ReadFile(path)
	if err != nil {
		return true // reported by the reload
	}
	return sha256.Sum256(data) != s.sums[path]
}

// reload loads the files again (all of them, or those whose content changed); a file that does not
// parse leaves its last good content in force, and the error is logged naming file:line.
func (s *authSetup) reload(onlyChanged bool) {
	if s.tls != nil {
		s.tls.reload(onlyChanged, s.log)
	}
	if s.auth != nil && (!onlyChanged || s.changed(s.cfg.PasswordFile)) {
		if pf, err := s.loadPasswords(); err != nil {
			s.log.Error("password file not reloaded: keeping the last good one", "err", err.Error())
		} else {
			s.auth.Set(pf)
			s.log.Info("password file reloaded", "file", s.cfg.PasswordFile, "users", len(pf.Users))
		}
	}
	if s.cfg.ACLFile != "" && s.acl != nil && (!onlyChanged || s.changed(s.cfg.ACLFile)) {
		if af, err := s.loadACL(); err != nil {
			s.log.Error("ACL file not reloaded: keeping the last good one", "err", err.Error())
		} else {
			s.acl.SetFile(af)
			s.log.Info("ACL file reloaded", "file", s.cfg.ACLFile)
			if s.aclReloaded != nil {
				s.aclReloaded()
			}
		}
	}
}

// collectors are the ACL's refusals by kind for /metrics (the MQTT refusals are in
// mqdapr_broker_refused_total already; key-value refusals are answered inside the protocol).
func (s *authSetup) collectors() []prometheus.Collector {
	if s.acl == nil {
		return nil
	}
	var out []prometheus.Collector
	for i, kind := range []string{"publish", "subscribe", "key"} {
		out = append(out, prometheus.NewCounterFunc(prometheus.CounterOpts{
			Name:        "mqdapr_broker_acl_refused_total",
			Help:        "Requests the ACL refused, by kind (publish, subscribe, key).",
			ConstLabels: prometheus.Labels{"kind": kind},
		}, func() float64 {
			pub, sub, key := s.acl.Refused()
			return float64([]int64{pub, sub, key}[i])
		}))
	}
	return out
}

// watch reloads on SIGHUP, and when a file's content changes (checked every interval; 0: SIGHUP
// only), until ctx ends. Content rather than modification time: a Kubernetes ConfigMap or Secret
// volume swaps a symlink, and an editor may keep the time.
func (s *authSetup) watch(ctx context.Context, interval time.Duration) {
	if s.auth == nil && s.cfg.ACLFile == "" && s.tls == nil {
		return
	}
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	go func() {
		defer signal.Stop(hup)
		var tick <-chan time.Time
		if interval > 0 {
			t := time.NewTicker(interval)
			defer t.Stop()
			tick = t.C
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-hup:
				s.reload(false)
			case <-tick:
				s.reload(true)
			}
		}
	}()
}

// passwdMain is `mqbroker passwd [-cost N] [-b] <password file> <user name>`: it adds or replaces
// the user's entry, asking for the password on the terminal (twice, not echoed) or reading one
// line from stdin when stdin is not a terminal. The password is never taken from the command line.
func passwdMain(args []string, stdin *os.File, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("mqbroker passwd", flag.ContinueOnError)
	fs.SetOutput(stderr)
	cost := fs.Int("cost", 0, "bcrypt cost, 4..31 (default 10)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: mqbroker passwd [-cost N] <password file> <user name>")
		fmt.Fprintln(stderr, "Adds or replaces the user's bcrypt entry (the file is created 0600). The password is read from the")
		fmt.Fprintln(stderr, "terminal (asked twice) or as one line from stdin; never from the command line.")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return 2
	}
	if fs.NArg() != 2 {
		fs.Usage()
		return 2
	}
	path, user := fs.Arg(0), fs.Arg(1)
	pw, err := readPassword(stdin, stdout)
	if err != nil {
		fmt.Fprintln(stderr, "mqbroker passwd:", err)
		return 1
	}
	if err := broker.SetPassword(path, user, pw, *cost); err != nil {
		fmt.Fprintln(stderr, "mqbroker passwd:", err)
		return 1
	}
	fmt.Fprintf(stdout, "%s: entry for %q written\n", path, user)
	return 0
}

func readPassword(stdin *os.File, prompt io.Writer) ([]byte, error) {
	fd := int(stdin.Fd())
	if term.IsTerminal(fd) {
		fmt.Fprint(prompt, "Password: ")
		a, err := term.ReadPassword(fd)
		fmt.Fprintln(prompt)
		if err != nil {
			return nil, err
		}
		fmt.Fprint(prompt, "Again: ")
		b, err := term.ReadPassword(fd)
		fmt.Fprintln(prompt)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(a, b) {
			return nil, errors.New("the passwords differ")
		}
		return a, nil
	}
	line, err := bufio.NewReader(stdin).ReadString('\n')
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("reading the password from stdin: %w", err)
	}
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return nil, errors.New("empty password on stdin")
	}
	return []byte(line), nil
}
