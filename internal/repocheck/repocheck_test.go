package repocheck

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// outsideRefs are references to places outside the repository that exist only on some machine. The
// patterns are narrow on purpose: `~/.cache/mqdapr`, `/tmp/…`, `/var/run/…` and container paths are
// legitimate and must not match.
var outsideRefs = []struct {
	re   *regexp.Regexp
	what string
}{
	{regexp.MustCompile(`(^|[^\w.~-])/work/`), "an absolute path into the developers' /work tree"},
	{regexp.MustCompile(`(^|[^\w.-])(\.\./)+shared(/|\b)`), "a relative path to the shared folder beside the repository"},
	{regexp.MustCompile(`\bshared/(spec|notes)/`), "the team's shared spec/notes folder"},
	{regexp.MustCompile(`(^|[^\w.~-])/root/`), "root's home directory"},
	{regexp.MustCompile(`(^|[^\w.~-])/home/[a-z_][\w-]*/`), "a user's home directory"},
	{regexp.MustCompile(`\b[Ss]pec §\d`), "the team spec's section numbering (cite docs/state-store-protocol.md#<section>)"},
}

// docCitation matches a repository-relative or file-relative Markdown path with a section anchor,
// e.g. `docs/state-store-protocol.md#fencing-tokens` or `(../docs/architecture.md#parts)`. It
// does not start inside a URL or a longer path (the character before it is not part of one).
var docCitation = regexp.MustCompile(`(?:^|[^\w/.-])((?:\.{1,2}/)*(?:[\w.-]+/)*[\w.-]+\.md)#([\w-]+)`)

// moreAnchors matches further sections of the same document right after a citation:
// `docs/x.md#a, #b and #c` or `#a / #b`.
var moreAnchors = regexp.MustCompile(`^(?:,? and |, | / )#([\w-]+)`)

// localLink matches a Markdown link to a section of the same document: `](#anchor)`.
var localLink = regexp.MustCompile(`\]\(#([\w-]+)\)`)

// skipped are files the checks do not read: generated or third-party content, and this package's
// tests, which spell out the very references they look for.
func skipped(name string) bool {
	base := path.Base(name)
	return base == "go.sum" || strings.HasPrefix(name, "vendor/") || strings.Contains(name, "/testdata/fuzz/") ||
		(strings.HasPrefix(name, "internal/repocheck/") && strings.HasSuffix(name, "_test.go"))
}

// TestNoReferencesOutsideRepository fails on any tracked file that refers to a path outside the
// repository: whoever clones it must find everything the code stands on inside it.
func TestNoReferencesOutsideRepository(t *testing.T) {
	root := repoRoot(t)
	var bad []string
	for _, name := range repoFiles(t, root) {
		if skipped(name) {
			continue
		}
		forEachLine(t, root, name, func(n int, line string) {
			if !strings.ContainsAny(line, "/§") { // every pattern needs one; most lines have neither
				return
			}
			for _, p := range outsideRefs {
				if p.re.MatchString(line) {
					bad = append(bad, fmt.Sprintf("%s:%d: %s: %s", name, n, p.what, strings.TrimSpace(line)))
				}
			}
		})
	}
	if len(bad) > 0 {
		t.Errorf("%d references outside the repository; bring the facts into the repository's docs (docs/) and cite them by a repository-relative path:\n%s",
			len(bad), strings.Join(bad, "\n"))
	}
}

// TestDocCitationsResolve fails on a citation `<file>.md#<anchor>` (repository-relative, or
// relative to the citing file for Markdown links) whose file does not exist or whose anchor is not
// a heading of that file, and on a Markdown link `](#anchor)` to a heading its own document lacks.
func TestDocCitationsResolve(t *testing.T) {
	root := repoRoot(t)
	files := repoFiles(t, root)
	tracked := make(map[string]bool, len(files))
	for _, f := range files {
		tracked[f] = true
	}
	anchors := map[string]map[string]bool{} // document -> its anchors, read once
	anchorsOf := func(doc string) map[string]bool {
		if a, ok := anchors[doc]; ok {
			return a
		}
		b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(doc)))
		if err != nil {
			t.Fatalf("reading %s: %v", doc, err)
		}
		a := headingAnchors(b)
		anchors[doc] = a
		return a
	}
	var bad []string
	for _, name := range files {
		if skipped(name) {
			continue
		}
		forEachLine(t, root, name, func(n int, line string) {
			if !strings.Contains(line, ".md#") && !strings.Contains(line, "](#") {
				return
			}
			for _, idx := range docCitation.FindAllStringSubmatchIndex(line, -1) {
				target, anchor := line[idx[2]:idx[3]], line[idx[4]:idx[5]]
				doc, ok := resolveDoc(tracked, name, target)
				if !ok {
					bad = append(bad, fmt.Sprintf("%s:%d: %s#%s: no such file in the repository", name, n, target, anchor))
					continue
				}
				cited := []string{anchor}
				for rest := line[idx[1]:]; ; {
					m := moreAnchors.FindStringSubmatchIndex(rest)
					if m == nil {
						break
					}
					cited = append(cited, rest[m[2]:m[3]])
					rest = rest[m[1]:]
				}
				for _, a := range cited {
					if !anchorsOf(doc)[a] {
						bad = append(bad, fmt.Sprintf("%s:%d: %s#%s: %s has no heading with that anchor", name, n, target, a, doc))
					}
				}
			}
			if strings.HasSuffix(name, ".md") {
				for _, m := range localLink.FindAllStringSubmatch(line, -1) {
					if !anchorsOf(name)[m[1]] {
						bad = append(bad, fmt.Sprintf("%s:%d: #%s: no heading with that anchor in this document", name, n, m[1]))
					}
				}
			}
		})
	}
	if len(bad) > 0 {
		t.Errorf("%d citations of missing document sections:\n%s", len(bad), strings.Join(bad, "\n"))
	}
}

// resolveDoc finds the tracked document a citation in file from names: repository-relative first
// (the form code comments use), then relative to from's folder (the form Markdown links use).
func resolveDoc(tracked map[string]bool, from, target string) (string, bool) {
	if p := path.Clean(target); tracked[p] {
		return p, true
	}
	if p := path.Join(path.Dir(from), target); tracked[p] {
		return p, true
	}
	return "", false
}

// headingAnchors returns the anchors GitHub gives the ATX headings of a Markdown document (see
// githubAnchor), headings inside fenced code blocks excluded; a repeated anchor gets "-1", "-2", …
func headingAnchors(doc []byte) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	fence := ""
	sc := bufio.NewScanner(bytes.NewReader(doc))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		trimmed := strings.TrimLeft(line, " ")
		if f := fenceOf(trimmed); f != "" {
			switch {
			case fence == "":
				fence = f
			case strings.HasPrefix(f, fence):
				fence = ""
			}
			continue
		}
		if fence != "" || len(line)-len(trimmed) > 3 {
			continue
		}
		text, ok := headingText(trimmed)
		if !ok {
			continue
		}
		a := githubAnchor(text)
		if k := seen[a]; k > 0 {
			seen[a] = k + 1
			a = fmt.Sprintf("%s-%d", a, k)
		} else {
			seen[a] = 1
		}
		out[a] = true
	}
	return out
}

// fenceOf returns the fence (a run of three or more backticks or tildes) that line opens or
// closes, or "".
func fenceOf(line string) string {
	for _, c := range []string{"`", "~"} {
		if strings.HasPrefix(line, c+c+c) {
			return strings.Repeat(c, len(line)-len(strings.TrimLeft(line, c)))
		}
	}
	return ""
}

// headingText returns the text of an ATX heading line ("## Text ##"), without the markers.
func headingText(line string) (string, bool) {
	level := len(line) - len(strings.TrimLeft(line, "#"))
	if level < 1 || level > 6 {
		return "", false
	}
	rest := line[level:]
	if rest != "" && rest[0] != ' ' && rest[0] != '\t' {
		return "", false
	}
	rest = strings.TrimSpace(rest)
	if t := strings.TrimRight(rest, "#"); t == "" || strings.HasSuffix(t, " ") {
		rest = strings.TrimSpace(t)
	}
	return rest, true
}

// mdLink is an inline Markdown link or image; its anchor text is the link text.
var mdLink = regexp.MustCompile(`!?\[([^\]]*)\]\([^)]*\)`)

// githubAnchor computes the anchor GitHub gives a heading: the text with links reduced to their
// text, lower-cased, every character that is not a letter, digit, space, '-' or '_' dropped, and
// each space turned into '-'.
func githubAnchor(text string) string {
	text = mdLink.ReplaceAllString(text, "$1")
	var b strings.Builder
	for _, r := range strings.ToLower(text) {
		switch {
		case unicode.IsLetter(r) || unicode.IsDigit(r) || r == '-' || r == '_':
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

// forEachLine calls fn with each line of a text file (1-based line numbers); binary files (a NUL
// byte) are skipped.
func forEachLine(t *testing.T, root, name string, fn func(n int, line string)) {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, filepath.FromSlash(name)))
	if errors.Is(err, fs.ErrNotExist) { // deleted in the work tree, not yet committed
		return
	}
	if err != nil {
		t.Fatalf("reading %s: %v", name, err)
	}
	if bytes.IndexByte(b, 0) >= 0 {
		return
	}
	for i, line := range strings.Split(string(b), "\n") {
		fn(i+1, line)
	}
}

// repoRoot returns the root of the repository: the folder of the go.mod of module
// github.com/mqdapr/mqdapr above the test's working directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatal(err)
	}
	for {
		b, err := os.ReadFile(filepath.Join(dir, "go.mod"))
		if err == nil && bytes.HasPrefix(b, []byte("module github.com/mqdapr/mqdapr\n")) {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatal("no go.mod of module github.com/mqdapr/mqdapr above the working directory")
		}
		dir = parent
	}
}

// repoFiles lists the repository's files, slash-separated and relative to root: what git tracks
// (and what is staged), or, outside a git checkout (an unpacked archive), every file below root
// except the folders that make run and the builds create.
func repoFiles(t *testing.T, root string) []string {
	t.Helper()
	cmd := exec.Command("git", "ls-files", "-z", "--cached")
	cmd.Dir = root
	out, err := cmd.Output()
	if err == nil {
		var files []string
		for _, f := range strings.Split(string(out), "\x00") {
			if f != "" {
				files = append(files, f)
			}
		}
		return files
	}
	t.Logf("git ls-files failed (%v); walking %s instead", err, root)
	var files []string
	err = filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			switch rel {
			case ".git", ".run", "bin":
				return filepath.SkipDir
			}
			return nil
		}
		if d.Type().IsRegular() {
			files = append(files, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("walking %s: %v", root, err)
	}
	return files
}
