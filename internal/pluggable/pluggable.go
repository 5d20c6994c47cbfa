// Package pluggable holds what the component commands share around components-go-sdk: the logger
// set-up and closing every instance the SDK created when the server stops (the SDK itself never
// calls Close, so without this a SIGTERM would skip the graceful shutdown).
package pluggable

import (
	"io"
	"os"
	"sync"

	"github.com/dapr/kit/logger"
)

// NewLogger returns the component's logger; MQDAPR_LOG_LEVEL (debug, info, warn, error) sets its level.
func NewLogger(name string) logger.Logger {
	log := logger.NewLogger(name)
	if lvl := os.Getenv("MQDAPR_LOG_LEVEL"); lvl != "" {
		log.SetOutputLevel(logger.LogLevel(lvl))
	}
	return log
}

// Instances remembers the component instances the SDK creates (one per Component name).
type Instances struct {
	mu   sync.Mutex // guards list
	list []io.Closer
}

// Track records c and returns it, for use inside an SDK factory.
func Track[T io.Closer](in *Instances, c T) T {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.list = append(in.list, c)
	return c
}

// Finish closes every instance after the SDK server returned runErr, and exits non-zero when it
// was an error.
func Finish(log logger.Logger, in *Instances, runErr error) {
	in.mu.Lock()
	for _, c := range in.list {
		if err := c.Close(); err != nil {
			log.Warnf("closing component instance: %v", err)
		}
	}
	in.mu.Unlock()
	if runErr != nil {
		log.Errorf("component server stopped: %v", runErr)
		os.Exit(1)
	}
}
