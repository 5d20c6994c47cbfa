package hlc

import (
	"errors"
	"math"
	"testing"
)

func TestParse(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want HLC
	}{
		{"SDK padded", "001696374425000:00000:0191f3ab-1234", HLC{1696374425000, 0, "0191f3ab-1234"}},
		{"docs unpadded", "1696374425000:1:StateStore", HLC{1696374425000, 1, "StateStore"}},
		{"request __ts", "001696374425000:00000:app1-node", HLC{1696374425000, 0, "app1-node"}},
		{"__ft", "001696374425000:00001:store-node", HLC{1696374425000, 1, "store-node"}},
		{"empty node ID", "1:2:", HLC{1, 2, ""}},
		{"zero", "0:0:n", HLC{0, 0, "n"}},
		{"wide counter", "000000000000001:123456:n", HLC{1, 123456, "n"}},
		{"max uint64", "18446744073709551615:18446744073709551615:n", HLC{math.MaxUint64, math.MaxUint64, "n"}},
		{"node ID with spaces and dashes", "1:2:a b-c", HLC{1, 2, "a b-c"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Parse(tc.in)
			if err != nil {
				t.Fatalf("Parse(%q): %v", tc.in, err)
			}
			if got != tc.want {
				t.Errorf("Parse(%q) = %+v, want %+v", tc.in, got, tc.want)
			}
		})
	}
}

func TestParseMalformed(t *testing.T) {
	tests := []string{
		"",
		"1696374425000",
		"1696374425000:1",
		"1696374425000:1:node:extra",
		":1:node",
		"1::node",
		"-1:1:node",
		"1:-1:node",
		"+1:1:node",
		"1:+1:node",
		" 1:1:node",
		"1 :1:node",
		"0x10:1:node",
		"1.5:1:node",
		"18446744073709551616:0:node",
		"0:18446744073709551616:node",
		"١:1:node", // non-ASCII digit
	}
	for _, in := range tests {
		t.Run(in, func(t *testing.T) {
			got, err := Parse(in)
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("Parse(%q) = %+v, %v; want ErrMalformed", in, got, err)
			}
		})
	}
}

func TestString(t *testing.T) {
	tests := []struct {
		h    HLC
		want string
	}{
		{HLC{1696374425000, 0, "app1-node"}, "001696374425000:00000:app1-node"},
		{HLC{1696374425000, 1, "StateStore"}, "001696374425000:00001:StateStore"},
		{HLC{0, 0, ""}, "000000000000000:00000:"},
		{HLC{1, 123456, "n"}, "000000000000001:123456:n"},
		{HLC{math.MaxUint64, math.MaxUint64, "n"}, "18446744073709551615:18446744073709551615:n"},
	}
	for _, tc := range tests {
		if got := tc.h.String(); got != tc.want {
			t.Errorf("%+v.String() = %q, want %q", tc.h, got, tc.want)
		}
	}
}

func TestParseFormatByteExact(t *testing.T) {
	// The SDKs' padded form survives Parse then String byte for byte
	// (docs/state-store-protocol.md#versions-hlc).
	for _, s := range []string{
		"001696374425000:00000:0191f3ab-0000-7000-8000-000000000000",
		"001696374425000:00001:app1-node",
		"999999999999999:99999:x",
	} {
		h, err := Parse(s)
		if err != nil {
			t.Fatalf("Parse(%q): %v", s, err)
		}
		if got := h.String(); got != s {
			t.Errorf("Parse(%q).String() = %q", s, got)
		}
	}
}

func TestCompare(t *testing.T) {
	tests := []struct {
		name string
		a, b HLC
		want int
	}{
		{"equal", HLC{5, 5, "n"}, HLC{5, 5, "n"}, 0},
		{"wall decides", HLC{4, 99, "z"}, HLC{5, 0, "a"}, -1},
		{"counter decides", HLC{5, 2, "a"}, HLC{5, 1, "z"}, 1},
		{"node decides as string", HLC{5, 1, "b"}, HLC{5, 1, "a"}, 1},
		{"node byte order", HLC{5, 1, "B"}, HLC{5, 1, "a"}, -1},
		{"zero lowest", HLC{}, HLC{0, 0, "a"}, -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := Compare(tc.a, tc.b); got != tc.want {
				t.Errorf("Compare(%v, %v) = %d, want %d", tc.a, tc.b, got, tc.want)
			}
			if got := tc.b.Compare(tc.a); got != -tc.want {
				t.Errorf("Compare(%v, %v) = %d, want %d", tc.b, tc.a, got, -tc.want)
			}
		})
	}
}

func TestPaddedAndUnpaddedCompareEqual(t *testing.T) {
	a, _ := Parse("001696374425000:00001:n")
	b, _ := Parse("1696374425000:1:n")
	if Compare(a, b) != 0 {
		t.Errorf("padded %v and unpadded %v should be equal", a, b)
	}
}

func TestTimeAndIsZero(t *testing.T) {
	if got := (HLC{WallMs: 1696374425000}).Time().UnixMilli(); got != 1696374425000 {
		t.Errorf("Time().UnixMilli() = %d", got)
	}
	if got := (HLC{WallMs: math.MaxUint64}).Time().UnixMilli(); got != math.MaxInt64 {
		t.Errorf("Time() of max wall = %d, want saturation", got)
	}
	if !(HLC{}).IsZero() || (HLC{NodeID: "x"}).IsZero() {
		t.Error("IsZero wrong")
	}
}
