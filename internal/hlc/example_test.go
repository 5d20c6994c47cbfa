package hlc_test

import (
	"fmt"
	"time"

	"github.com/mqdapr/mqdapr/internal/hlc"
)

// Example shows a store merging a client's __ts into its clock
// (docs/state-store-protocol.md#versions-hlc, #example-acquire-and-renew-a-lock).
func Example() {
	wall := time.UnixMilli(1696374425000)
	clock, err := hlc.NewClock(hlc.Options{NodeID: "store-node", Now: func() time.Time { return wall }})
	if err != nil {
		panic(err)
	}
	ts, err := hlc.Parse("001696374425000:00000:app1-node")
	if err != nil {
		panic(err)
	}
	version, err := clock.Update(ts)
	fmt.Println(version, err)

	_, err = clock.Update(hlc.HLC{WallMs: 1696374425000 + 61_000, NodeID: "app1-node"})
	fmt.Println(err)
	// Output:
	// 001696374425000:00001:store-node <nil>
	// timestamp 001696374486000:00000:app1-node is 61000ms ahead of the local clock, more than 1m0s: hlc: timestamp too far in the future
}
