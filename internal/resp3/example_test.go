package resp3_test

import (
	"fmt"

	"github.com/mqdapr/mqdapr/internal/resp3"
)

// Example shows the client side: encode a request, decode the response forms of
// docs/state-store-protocol.md#responses.
func Example() {
	req := resp3.EncodeArray([]byte("SET"), []byte("lock"), []byte("client1"), []byte("NX"), []byte("PX"), []byte("10000"))
	fmt.Printf("%d bytes\n", len(req))

	for _, payload := range []string{"+OK\r\n", ":-1\r\n", "$7\r\nclient1\r\n", "$-1\r\n", "-ERR syntax error\r\n"} {
		v, err := resp3.DecodeResponse([]byte(payload))
		if err != nil {
			panic(err)
		}
		switch v.Kind {
		case resp3.KindError:
			fmt.Printf("%s: %q\n", v.Kind, v.ErrorMessage())
		case resp3.KindInteger:
			fmt.Printf("%s: %d\n", v.Kind, v.Int)
		default:
			fmt.Printf("%s: %q\n", v.Kind, v.Str)
		}
	}
	// Output:
	// 63 bytes
	// simple string: "OK"
	// integer: -1
	// bulk string: "client1"
	// null bulk string: ""
	// error: "syntax error"
}

// ExampleDecodeArray shows the server side: a request is decoded into its elements.
func ExampleDecodeArray() {
	elems, err := resp3.DecodeArray([]byte("*2\r\n$3\r\nGET\r\n$4\r\nlock\r\n"))
	fmt.Printf("%q %v\n", elems, err)
	_, err = resp3.DecodeArray([]byte("*2\r\n$3\r\nGET\r\n$9\r\nlock\r\n"))
	fmt.Println(err)
	// Output:
	// ["GET" "lock"] <nil>
	// array element 1: offset 14: bulk string declares 9 bytes but only 6 remain: resp3: invalid length
}
