package broker

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"

	"golang.org/x/crypto/bcrypt"
)

// Password file: one entry a line, `<user name>:<bcrypt hash>` (the hash as bcrypt writes it,
// `$2a$`/`$2b$`/`$2y$` and the cost, e.g. `alice:$2a$10$...`), like Mosquitto's password file but
// with bcrypt; blank lines and lines starting with '#' are ignored. `mqbroker passwd` writes entries.
// A user name is not empty, is valid UTF-8 and holds no ':' or white space.

// ErrPasswordFile wraps every error about a password file's content.
var ErrPasswordFile = errors.New("password file")

// PasswordFile is a parsed password file: user name to bcrypt hash.
type PasswordFile struct {
	Path  string
	Users map[string][]byte
	cost  int // highest bcrypt cost of its hashes (0: none)
}

// ParsePasswordFile parses a password file's content; errors name path:line, what is wrong and
// what is accepted. Nothing in an error repeats a hash.
func ParsePasswordFile(path string, data []byte) (*PasswordFile, error) {
	pf := &PasswordFile{Path: path, Users: map[string][]byte{}}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		user, hash, ok := strings.Cut(line, ":")
		if !ok {
			return nil, fmt.Errorf("%w %s:%d: want `<user name>:<bcrypt hash>` (write entries with `mqbroker passwd`)", ErrPasswordFile, path, n)
		}
		if err := checkUserName(user); err != nil {
			return nil, fmt.Errorf("%w %s:%d: %v", ErrPasswordFile, path, n, err)
		}
		cost, err := bcrypt.Cost([]byte(hash))
		if err != nil || !strings.HasPrefix(hash, "$2") {
			return nil, fmt.Errorf("%w %s:%d: user %q: the hash is not a bcrypt hash ($2a$, $2b$ or $2y$, cost 4..31, 60 characters; write it with `mqbroker passwd`)", ErrPasswordFile, path, n, user)
		}
		if _, dup := pf.Users[user]; dup {
			return nil, fmt.Errorf("%w %s:%d: user %q appears twice", ErrPasswordFile, path, n, user)
		}
		pf.Users[user] = []byte(hash)
		pf.cost = max(pf.cost, cost)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%w %s: %v", ErrPasswordFile, path, err)
	}
	return pf, nil
}

// LoadPasswordFile reads and parses the password file at path.
func LoadPasswordFile(path string) (*PasswordFile, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPasswordFile, err)
	}
	return ParsePasswordFile(path, data)
}

func checkUserName(user string) error {
	if user == "" || strings.ContainsAny(user, ": \t\r\n") || !validUTF8(user) {
		return fmt.Errorf("user name %q: want a non-empty UTF-8 name without ':' or white space", user)
	}
	return nil
}

// HashPassword returns the bcrypt hash of password at cost (bcrypt.DefaultCost when 0).
func HashPassword(password []byte, cost int) ([]byte, error) {
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	if len(password) == 0 {
		return nil, errors.New("empty password")
	}
	if len(password) > 72 {
		return nil, errors.New("password longer than 72 bytes (bcrypt's limit)")
	}
	return bcrypt.GenerateFromPassword(password, cost)
}

// SetPassword writes (adds or replaces) user's entry in the password file at path, created 0600
// when missing, keeping every other line as it was. The file is replaced atomically (a rename), so
// a broker watching it never reads half a file.
func SetPassword(path, user string, password []byte, cost int) error {
	if err := checkUserName(user); err != nil {
		return err
	}
	hash, err := HashPassword(password, cost)
	if err != nil {
		return err
	}
	old, err := os.ReadFile(path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	if len(old) > 0 {
		if _, err := ParsePasswordFile(path, old); err != nil {
			return fmt.Errorf("not rewriting it: %w", err)
		}
	}
	var out bytes.Buffer
	replaced := false
	for _, line := range strings.SplitAfter(string(old), "\n") {
		if u, _, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && u == user && !strings.HasPrefix(strings.TrimSpace(line), "#") {
			if !replaced {
				out.WriteString(user + ":" + string(hash) + "\n")
				replaced = true
			}
			continue
		}
		out.WriteString(line)
	}
	if !replaced {
		if out.Len() > 0 && !bytes.HasSuffix(out.Bytes(), []byte("\n")) {
			out.WriteByte('\n')
		}
		out.WriteString(user + ":" + string(hash) + "\n")
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".passwd-*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(out.Bytes()); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// PasswordAuth is an Authenticator checking user name and password against a password file.
// Anonymous clients (no user name and no password) are let in only with AllowAnonymous. A refusal
// carries 0x86 Bad User Name or Password (MQTT v5 §3.2.2.2; 3.1.1 return code 0x04) for a wrong or
// missing password or an unknown user, 0x87 Not authorized (0x05) for an anonymous client, and 0x8C
// Bad authentication method for an enhanced authentication method (none is served).
type PasswordAuth struct {
	AllowAnonymous bool
	file           atomic.Pointer[PasswordFile]
	refused        atomic.Int64
	dummyMu        sync.Mutex
	dummy          map[int][]byte // by cost: the hash an unknown user is checked against
}

// NewPasswordAuth returns an Authenticator over pf (nil: no users, so anonymous clients alone when
// allowed).
func NewPasswordAuth(pf *PasswordFile, allowAnonymous bool) *PasswordAuth {
	a := &PasswordAuth{AllowAnonymous: allowAnonymous}
	if pf == nil {
		pf = &PasswordFile{Users: map[string][]byte{}}
	}
	a.file.Store(pf)
	return a
}

// Set replaces the users (a reload); connections already authenticated are kept.
func (a *PasswordAuth) Set(pf *PasswordFile) { a.file.Store(pf) }

// Refused counts the clients refused so far.
func (a *PasswordAuth) Refused() int64 { return a.refused.Load() }

func (a *PasswordAuth) dummyHash(cost int) []byte {
	if cost == 0 {
		cost = bcrypt.DefaultCost
	}
	a.dummyMu.Lock()
	defer a.dummyMu.Unlock()
	if h := a.dummy[cost]; h != nil {
		return h
	}
	h, _ := bcrypt.GenerateFromPassword([]byte("mqbroker-unknown-user"), cost)
	if a.dummy == nil {
		a.dummy = map[int][]byte{}
	}
	a.dummy[cost] = h
	return h
}

// Authenticate implements Authenticator. The error never holds the password or its hash.
func (a *PasswordAuth) Authenticate(_ context.Context, req *AuthRequest) (AuthResponse, error) {
	if req.Method != "" {
		a.refused.Add(1)
		return AuthResponse{}, reasonf(CodeBadAuthenticationMethod, "authentication method %q is not served (user name and password only)", req.Method)
	}
	if req.Username == "" && !req.HasPassword {
		if a.AllowAnonymous {
			return AuthResponse{}, nil
		}
		a.refused.Add(1)
		return AuthResponse{}, reasonf(CodeNotAuthorized, "anonymous client refused: give a user name and password")
	}
	pf := a.file.Load()
	hash, known := pf.Users[req.Username]
	if !known {
		// The same bcrypt work as for a known user (the file's highest cost), so the time taken
		// does not tell user names.
		hash = a.dummyHash(pf.cost)
	}
	if err := bcrypt.CompareHashAndPassword(hash, req.Password); err != nil || !known || !req.HasPassword {
		a.refused.Add(1)
		return AuthResponse{}, reasonf(CodeBadUserNameOrPassword, "user %q: unknown user or wrong password", req.Username)
	}
	return AuthResponse{}, nil
}
