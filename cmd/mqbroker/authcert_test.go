package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
)

// pemCA writes a CA and returns a function issuing PEM certificate/key files signed by it.
func pemCA(t *testing.T, dir, name string) (caFile string, issue func(cn string, server bool) (cert, key string)) {
	t.Helper()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	require.NoError(t, err)
	caCert, err := x509.ParseCertificate(caDER)
	require.NoError(t, err)
	write := func(file, typ string, der []byte) string {
		p := filepath.Join(dir, file)
		require.NoError(t, os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return p
	}
	caFile = write(name+"-ca.pem", "CERTIFICATE", caDER)
	n := int64(1)
	return caFile, func(cn string, server bool) (string, string) {
		n++
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		require.NoError(t, err)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(n), Subject: pkix.Name{CommonName: cn},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		if server {
			tmpl.ExtKeyUsage, tmpl.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, []net.IP{net.ParseIP("127.0.0.1")}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		require.NoError(t, err)
		kd, err := x509.MarshalECPrivateKey(key)
		require.NoError(t, err)
		return write(name+"-"+cn+".pem", "CERTIFICATE", der), write(name+"-"+cn+"-key.pem", "EC PRIVATE KEY", kd)
	}
}

// -tls-client-ca: mosquitto_pub with --cert/--key over MQTT v5 and 3.1.1 is its certificate's
// identity for the ACL (MQTT v5 §5.4.2); a certificate of another CA is refused in the handshake;
// a listener that requires client certificates counts as authenticated for the loopback check.
func TestClientCertificatesProcess(t *testing.T) {
	pub := os.Getenv("MOSQUITTO_PUB")
	if pub == "" {
		var err error
		if pub, err = exec.LookPath("mosquitto_pub"); err != nil {
			if os.Getenv("CI") != "" {
				t.Fatal("mosquitto_pub not found; scripts/install-test-deps.sh installs mosquitto-clients")
			}
			t.Skip("mosquitto_pub not found: run scripts/install-test-deps.sh")
		}
	}
	dir := t.TempDir()
	caFile, issue := pemCA(t, dir, "ca")
	_, issueOther := pemCA(t, dir, "other")
	srvCert, srvKey := issue("broker", true)
	devCert, devKey := issue("device-1", false)
	forgedCert, forgedKey := issueOther("device-1", false)
	acl := filepath.Join(dir, "acl")
	require.NoError(t, os.WriteFile(acl, []byte("all\ntopic readwrite devices/%u/#\n"), 0o600))
	// No password file: the TLS listener requires certificates, the plain one is on loopback.
	addr, _, lg := startAuthBroker(t, "-tls-addr", "127.0.0.1:0", "-tls-cert", srvCert, "-tls-key", srvKey,
		"-tls-client-ca", caFile, "-acl-file", acl, "-kv=false")
	addrs := strings.Fields(addr) // "listening [plain tls]"
	require.Len(t, addrs, 2, addr)
	_, port, _ := net.SplitHostPort(addrs[1])
	require.NotContains(t, lg.String(), "user names are not verified", "certificates verify them")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	run := func(v, cert, key, topic string) (string, error) {
		out, err := exec.CommandContext(ctx, pub, "-V", v, "-h", "127.0.0.1", "-p", port, "--cafile", caFile,
			"--cert", cert, "--key", key, "-q", "1", "-t", topic, "-m", "m").CombinedOutput()
		return string(out), err
	}
	for _, v := range []string{"mqttv5", "mqttv311"} {
		out, err := run(v, devCert, devKey, "devices/device-1/t")
		require.NoError(t, err, "%s: %s", v, out)
		require.Empty(t, strings.TrimSpace(out), v)
		out, err = run(v, forgedCert, forgedKey, "devices/device-1/t")
		require.Error(t, err, "%s: %s", v, out)
	}
	out, _ := run("mqttv5", devCert, devKey, "devices/device-2/t")
	require.Contains(t, out, "Publish 1 failed: Not authorized")
	require.Contains(t, lg.String(), `publish not authorized" client=`)
	require.Contains(t, lg.String(), `user=device-1 topic=devices/device-2/t`)

	// The loopback check: a TLS listener requiring certificates is authenticated; in optional mode
	// it is not.
	cfg, err := parseConfig([]string{"-addr", "", "-tls-addr", "0.0.0.0:8883", "-tls-cert", srvCert, "-tls-key", srvKey, "-tls-client-ca", caFile})
	require.NoError(t, err)
	ls, _, err := unauthenticatedListeners(cfg)
	require.NoError(t, err)
	require.Empty(t, ls)
	cfg.TLSClientAuth = "optional"
	ls, _, err = unauthenticatedListeners(cfg)
	require.NoError(t, err)
	require.Equal(t, []string{"0.0.0.0:8883"}, ls)
	for flags, want := range map[string]string{
		"-tls-client-auth maybe -tls-client-ca " + caFile + " -tls-cert " + srvCert + " -tls-key " + srvKey: `-tls-client-auth "maybe": want require or optional`,
		"-tls-client-auth optional": `-tls-client-auth "optional" needs -tls-client-ca`,
		"-tls-client-ca " + caFile:  "-tls-client-ca needs the TLS listener: -tls-cert and -tls-key",
		"-tls-client-ca " + srvKey + " -tls-cert " + srvCert + " -tls-key " + srvKey: "no PEM certificate in it",
	} {
		err := run2(strings.Fields(flags))
		require.ErrorContains(t, err, want, flags)
	}
}

func run2(flags []string) error {
	return run(append([]string{"-addr", "127.0.0.1:0", "-tls-addr", "127.0.0.1:0", "-kv=false"}, flags...))
}

// The TLS listener's certificate and key are reloaded when their files change (as cert-manager
// rotates them): the next handshake gets the new certificate; files that do not load are reported
// and the last good ones stay in force.
func TestTLSFilesReload(t *testing.T) {
	dir := t.TempDir()
	caFile, issue := pemCA(t, dir, "ca")
	aCert, aKey := issue("broker-a", true)
	bCert, bKey := issue("broker-b", true)
	cert, key := filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	cp := func(from, to string) {
		data, err := os.ReadFile(from)
		require.NoError(t, err)
		writeAtomic(t, to, string(data))
	}
	cp(aCert, cert)
	cp(aKey, key)
	addr, _, lg := startAuthBroker(t, "-tls-addr", "127.0.0.1:0", "-tls-cert", cert, "-tls-key", key, "-auth-watch-ms", "20", "-kv=false")
	tlsAddr := strings.Fields(addr)[1]
	caPEM, err := os.ReadFile(caFile)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	require.True(t, pool.AppendCertsFromPEM(caPEM))
	served := func() string {
		c, err := tls.Dial("tcp", tlsAddr, &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12})
		require.NoError(t, err)
		defer c.Close()
		return c.ConnectionState().PeerCertificates[0].Subject.CommonName
	}
	require.Equal(t, "broker-a", served())
	cp(bCert, cert)
	cp(bKey, key)
	lg.waitCount(t, "TLS files reloaded", 1)
	require.Equal(t, "broker-b", served())
	writeAtomic(t, key, "-----BEGIN EC PRIVATE KEY-----\nbroken\n-----END EC PRIVATE KEY-----\n")
	lg.waitCount(t, "TLS files not reloaded: keeping the last good ones", 1)
	require.Equal(t, "broker-b", served())
	require.Contains(t, lg.String(), "TLS key pair "+cert+", "+key)
}
