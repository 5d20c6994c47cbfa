//go:build !linux

package applog

import "os"

// fdatasync is fsync where the system has no fdatasync (macOS: F_FULLFSYNC).
func fdatasync(f *os.File) error { return f.Sync() }
