package applog

import (
	"os"
	"syscall"
)

// fdatasync flushes f's data, and its metadata only where reading the data needs it (a size
// change), so that overwriting preallocated bytes costs no journal commit as fsync's mtime would.
func fdatasync(f *os.File) error { return syscall.Fdatasync(int(f.Fd())) }
