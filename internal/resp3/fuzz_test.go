package resp3

import (
	"bytes"
	"testing"
)

func addSeeds(f *testing.F) {
	for _, tc := range requestVectors {
		f.Add([]byte(tc.wire))
	}
	for _, tc := range responseVectors {
		f.Add([]byte(tc.wire))
	}
	for _, tc := range malformedVectors {
		f.Add([]byte(tc.wire))
	}
}

// FuzzDecodeArray checks that DecodeArray never panics and that every accepted input is the
// canonical encoding of what it decoded to: re-encoding the elements yields the input byte for byte.
//
//	go test -run '^$' -fuzz FuzzDecodeArray -fuzztime 20s ./internal/resp3
func FuzzDecodeArray(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		elems, err := DecodeArray(in)
		if err != nil {
			return
		}
		if out := EncodeArray(elems...); !bytes.Equal(out, in) {
			t.Fatalf("round trip: DecodeArray(%q) then EncodeArray = %q", in, out)
		}
	})
}

// FuzzDecodeResponse checks that DecodeResponse never panics, that every accepted input re-encodes
// to itself, and that an accepted value decodes again to an equal value.
//
//	go test -run '^$' -fuzz FuzzDecodeResponse -fuzztime 20s ./internal/resp3
func FuzzDecodeResponse(f *testing.F) {
	addSeeds(f)
	f.Fuzz(func(t *testing.T, in []byte) {
		v, err := DecodeResponse(in)
		if err != nil {
			return
		}
		out, err := Encode(v)
		if err != nil {
			t.Fatalf("Encode of decoded %q: %v", in, err)
		}
		if !bytes.Equal(out, in) {
			t.Fatalf("round trip: DecodeResponse(%q) then Encode = %q", in, out)
		}
		again, err := DecodeResponse(out)
		if err != nil || !equalValue(again, v) {
			t.Fatalf("second decode of %q = %+v, %v; want %+v", out, again, err, v)
		}
	})
}

// FuzzEncodeDecodeArray builds an array from arbitrary elements (split at a separator byte) and
// checks that it decodes back to the same elements.
//
//	go test -run '^$' -fuzz FuzzEncodeDecodeArray -fuzztime 20s ./internal/resp3
func FuzzEncodeDecodeArray(f *testing.F) {
	f.Add([]byte("SET\x00lock\x00client1\x00NX\x00PX\x0010000"), byte(0))
	f.Add([]byte("\r\n$3\r\n"), byte('$'))
	f.Add([]byte{}, byte(0))
	f.Fuzz(func(t *testing.T, joined []byte, sep byte) {
		elems := bytes.Split(joined, []byte{sep})
		got, err := DecodeArray(EncodeArray(elems...))
		if err != nil {
			t.Fatalf("DecodeArray(EncodeArray(%q)): %v", elems, err)
		}
		if len(got) != len(elems) {
			t.Fatalf("got %d elements, want %d", len(got), len(elems))
		}
		for i := range got {
			if !bytes.Equal(got[i], elems[i]) {
				t.Fatalf("element %d = %q, want %q", i, got[i], elems[i])
			}
		}
	})
}
