package pubsubserver

import (
	"fmt"
	"os"
)

// ServerEnv chooses the pub/sub component's gRPC server: "own" (this package) or "sdk"
// (components-go-sdk v0.3.0, which has the ack race described in the package comment).
const ServerEnv = "MQDAPR_PUBSUB_SERVER"

// DefaultServer is the server used when ServerEnv is unset or empty.
const DefaultServer = "own"

// Own reports whether ServerEnv (or DefaultServer) selects this package's server; a value other
// than "own" or "sdk" is an error naming both.
func Own() (bool, error) {
	v := os.Getenv(ServerEnv)
	if v == "" {
		v = DefaultServer
	}
	switch v {
	case "own":
		return true, nil
	case "sdk":
		return false, nil
	}
	return false, fmt.Errorf("%s=%q: want \"own\" (mqdapr's gRPC server) or \"sdk\" (components-go-sdk's)", ServerEnv, v)
}
