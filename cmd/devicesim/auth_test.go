package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/mqdapr/mqdapr/broker"
	"github.com/mqdapr/mqdapr/broker/brokertest"
)

// -username and -password-file against a broker with a password file: the user gets in and
// publishes; a wrong password and an anonymous client are refused at once (CONNACK 0x86/0x87
// named, not a 30 s wait), and no error carries the password.
func TestCredentialsAgainstPasswordFile(t *testing.T) {
	users := filepath.Join(t.TempDir(), "passwd")
	if err := broker.SetPassword(users, "devicesim", []byte("dev-pw"), bcrypt.MinCost); err != nil {
		t.Fatal(err)
	}
	pf, err := broker.LoadPasswordFile(users)
	if err != nil {
		t.Fatal(err)
	}
	b := brokertest.StartWith(t, func(o *broker.Options) { o.Authenticator = broker.NewPasswordAuth(pf, false) })
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	write := func(content string) string {
		f := filepath.Join(t.TempDir(), "password")
		if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	creds, err := loadCredentials("devicesim", write("dev-pw\n"))
	if err != nil {
		t.Fatal(err)
	}
	pub, err := dial(ctx, b.URL(false), "devicesim-auth", creds, time.Minute)
	if err != nil {
		t.Fatalf("with the password file: %v", err)
	}
	if err := pub.Publish(ctx, "devices/d1/telemetry", []byte(`{}`), false, nil); err != nil {
		t.Fatalf("publish: %v", err)
	}
	_ = pub.Close(ctx)

	wrong, err := loadCredentials("devicesim", write("guessed"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		creds credentials
		want  string
	}{
		{"wrong password", wrong, "CONNACK 0x86 bad user name or password"},
		{"anonymous", credentials{}, "CONNACK 0x87 not authorized"},
	} {
		start := time.Now()
		_, err := dial(ctx, b.URL(false), "devicesim-"+tc.name, tc.creds, time.Minute)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("%s: err %v, want %q", tc.name, err, tc.want)
		}
		if strings.Contains(err.Error(), "guessed") {
			t.Fatalf("%s: the error carries the password: %v", tc.name, err)
		}
		if d := time.Since(start); d > 10*time.Second {
			t.Fatalf("%s: refused after %s, want at once", tc.name, d)
		}
	}

	for _, tc := range []struct{ user, file, want string }{
		{"", write("x"), "without -username"},
		{"u", write(" \n"), "is empty"},
		{"u", filepath.Join(t.TempDir(), "absent"), "no such file"},
	} {
		if _, err := loadCredentials(tc.user, tc.file); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("loadCredentials(%q, %s): err %v, want %q", tc.user, tc.file, err, tc.want)
		}
	}
	if _, err := dial(ctx, "mqtt://u:p@"+b.Addr(), "devicesim-both", creds, time.Minute); err == nil || !strings.Contains(err.Error(), "give one") {
		t.Fatalf("URL credentials and flags: err %v", err)
	}
}
