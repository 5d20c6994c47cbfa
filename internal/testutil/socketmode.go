package testutil

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// worldWritableWarning is what pluggable.PrepareSocket logs about a socket folder every user may write.
const worldWritableWarning = "is writable by every user"

// CheckSocketMode runs the component registered as name (env: what makes the test binary's
// TestMain call main()) and checks the socket contract of internal/pluggable.PrepareSocket: in a
// 0750 folder its socket is a socket of mode 0770 (nothing for other users) and nothing is
// warned about; in a world-writable folder with the sticky bit (as /tmp) it serves and warns,
// naming the folder and its mode.
func CheckSocketMode(t *testing.T, name string, env ...string) {
	t.Helper()
	folder := filepath.Join(t.TempDir(), "sockets")
	if err := os.Mkdir(folder, 0o750); err != nil {
		t.Fatal(err)
	}
	var out SyncBuffer
	c := StartComponentIn(t, name, folder, &out, append(env, "MQDAPR_LOG_LEVEL=info")...)
	fi, err := os.Lstat(c.Socket)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Type() != fs.ModeSocket || fi.Mode().Perm() != 0o770 {
		t.Fatalf("socket %s has mode %v, want Srwxrwx---", c.Socket, fi.Mode())
	}
	waitForOutput(t, &out, "serving", "using socket")
	c.Kill()
	if strings.Contains(out.String(), worldWritableWarning) {
		t.Fatalf("a 0750 socket folder was warned about:\n%s", out.String())
	}

	open := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(open, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(open, 0o777|fs.ModeSticky); err != nil {
		t.Fatal(err)
	}
	var out2 SyncBuffer
	c = StartComponentIn(t, name, open, &out2, append(env, "MQDAPR_LOG_LEVEL=info")...)
	line := waitForOutput(t, &out2, worldWritableWarning)
	for _, want := range []string{"the socket folder " + open + " ", "mode dtrwxrwxrwx"} {
		if !strings.Contains(line, want) {
			t.Fatalf("the warning does not say %q: %s", want, line)
		}
	}
	if fi, err := os.Lstat(c.Socket); err != nil || fi.Mode().Perm() != 0o770 {
		t.Fatalf("socket %s in a world-writable folder: %v %v, want mode Srwxrwx---", c.Socket, fi, err)
	}
}

// waitForOutput waits (up to 30 s) for a line of out holding any of subs and returns it.
func waitForOutput(t *testing.T, out *SyncBuffer, subs ...string) string {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		for _, l := range strings.Split(out.String(), "\n") {
			for _, s := range subs {
				if strings.Contains(l, s) {
					return l
				}
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no line with %q after 30 s in:\n%s", subs, out.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
