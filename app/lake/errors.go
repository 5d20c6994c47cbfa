// Package lake appends rows to a local data lake of JSON Lines files, durably: Write returns only
// after the row's bytes were fsynced. Concurrent writers to one file share fsyncs (group commit).
package lake

import "errors"

// ErrClosed is returned by Write after Close.
var ErrClosed = errors.New("lake: closed")

// ErrInvalidPath is returned when a partition path would leave the lake folder or is malformed.
var ErrInvalidPath = errors.New("lake: invalid partition path")

// ErrWrite is returned (wrapping the OS error) when a row could not be written or synced. The row
// may or may not be on disk; the file is reopened on the next Write.
var ErrWrite = errors.New("lake: write failed")
