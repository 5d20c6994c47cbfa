package statestore_test

import (
	"context"
	"fmt"
	"time"

	"github.com/mqdapr/mqdapr/broker/statestore"
)

// Example shows what the broker adapter does with the engine: hand it matching PUBLISHes, publish
// what it returns, and drive expiry from a timer armed at NextDeadline.
func Example() {
	now := time.UnixMilli(1696374425000)
	opts := statestore.NewDefaultOptions()
	opts.NodeID = "store-node"
	opts.Now = func() time.Time { return now }
	engine, err := statestore.NewEngine(opts)
	if err != nil {
		panic(err)
	}
	defer engine.Close()
	ctx := context.Background()

	request := func(clientID, payload string) statestore.Request {
		return statestore.Request{
			ClientID: clientID,
			Topic:    statestore.RequestTopic,
			QoS:      1,
			Payload:  []byte(payload),
			Properties: statestore.Properties{
				ResponseTopic:   "clients/" + clientID + "/services/statestore/_any_/command/invoke/response",
				CorrelationData: []byte("0123456789abcdef"),
				User:            []statestore.UserProperty{{Key: "__ts", Value: "001696374425000:00000:" + clientID}},
			},
		}
	}
	publish := func(res statestore.Result) {
		fmt.Printf("%s %q %v\n", res.Response.Topic, res.Response.Payload, res.Response.Properties.User)
		for _, n := range res.Notifications {
			fmt.Printf("%s %q\n", n.Topic, n.Payload)
		}
	}

	if !engine.Match(statestore.RequestTopic) {
		panic("request topic not matched")
	}
	res, _ := engine.Handle(ctx, request("watcher", "*2\r\n$9\r\nKEYNOTIFY\r\n$4\r\nlock\r\n"))
	publish(res)
	res, _ = engine.Handle(ctx, request("app1", "*6\r\n$3\r\nSET\r\n$4\r\nlock\r\n$4\r\napp1\r\n$2\r\nNX\r\n$2\r\nPX\r\n$4\r\n1000\r\n"))
	publish(res)

	deadline, _ := engine.NextDeadline()
	for _, n := range engine.Expire(ctx, deadline) {
		fmt.Printf("%s %q\n", n.Topic, n.Payload)
	}
	engine.ClientDisconnected("watcher")
	// Output:
	// clients/watcher/services/statestore/_any_/command/invoke/response "+OK\r\n" [{__stat 200} {__protVer 1.0}]
	// clients/app1/services/statestore/_any_/command/invoke/response "+OK\r\n" [{__stat 200} {__protVer 1.0} {__ts 001696374425000:00002:store-node}]
	// clients/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/77617463686572/command/notify/6C6F636B "*4\r\n$6\r\nNOTIFY\r\n$3\r\nSET\r\n$5\r\nVALUE\r\n$4\r\napp1\r\n"
	// clients/statestore/v1/FA9AE35F-2F64-47CD-9BFF-08E2B32A0FE8/77617463686572/command/notify/6C6F636B "*2\r\n$6\r\nNOTIFY\r\n$6\r\nDELETE\r\n"
}
