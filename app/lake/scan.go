package lake

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
)

// Find reports whether the file rel (of any replica, when the lake folder is shared) holds a
// complete row (newline-terminated) for which match returns true. A missing file holds no row. It
// reads the file as it is now: rows appended while it runs may or may not be seen, so callers must
// make sure nobody writes the row they look for at the same time. A found row is fsynced before
// Find returns true. match must not keep line.
func (l *Lake) Find(rel string, match func(line []byte) bool) (bool, error) {
	abs, err := l.abs(rel)
	if err != nil {
		return false, err
	}
	f, err := os.Open(abs)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("lake: scanning %s: %w", rel, err)
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 64<<10)
	for {
		line, err := r.ReadSlice('\n')
		switch {
		case err == nil:
			if match(line[:len(line)-1]) {
				// The row may be there from a write whose fsync failed or never ran (crash):
				// make it durable before anyone relies on it.
				if err := l.sync(f); err != nil {
					return false, fmt.Errorf("%w: syncing %s after finding the row: %w", ErrWrite, rel, err)
				}
				return true, nil
			}
		case errors.Is(err, bufio.ErrBufferFull):
			if err := skipLine(r); errors.Is(err, io.EOF) {
				return false, nil // a torn, overlong last line
			} else if err != nil {
				return false, fmt.Errorf("lake: scanning %s: %w", rel, err)
			}
		case errors.Is(err, io.EOF): // a torn last line (no newline) is not a row
			return false, nil
		default:
			return false, fmt.Errorf("lake: scanning %s: %w", rel, err)
		}
	}
}

// skipLine consumes the rest of an overlong line.
func skipLine(r *bufio.Reader) error {
	for {
		_, err := r.ReadSlice('\n')
		if !errors.Is(err, bufio.ErrBufferFull) {
			return err
		}
	}
}
