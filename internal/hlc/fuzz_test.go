package hlc

import (
	"strings"
	"testing"
)

// FuzzParse checks that Parse never panics, that every accepted string is re-parsed from String to
// an equal HLC, that String is byte-exact for the SDKs' padded form, and that Compare agrees.
//
//	go test -run '^$' -fuzz FuzzParse -fuzztime 20s ./internal/hlc
func FuzzParse(f *testing.F) {
	for _, s := range []string{
		"001696374425000:00000:app1-node", "1696374425000:1:StateStore", "1:2:", "::", "1:2:3:4",
		"18446744073709551615:18446744073709551615:n", "-1:0:n", "00:00:00",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		h, err := Parse(s)
		if err != nil {
			return
		}
		out := h.String()
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(%q) ok but Parse(String()=%q): %v", s, out, err)
		}
		if again != h || Compare(again, h) != 0 {
			t.Fatalf("round trip %q -> %+v -> %q -> %+v", s, h, out, again)
		}
		wall, rest, _ := strings.Cut(s, ":")
		counter, _, _ := strings.Cut(rest, ":")
		if len(wall) == 15 && len(counter) == 5 && out != s {
			t.Fatalf("padded form %q formatted as %q", s, out)
		}
	})
}
