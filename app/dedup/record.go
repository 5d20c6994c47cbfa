package dedup

import (
	"encoding/json"
	"fmt"
	"time"
)

// Record states.
const (
	StatePending = "pending" // claimed: the owner may be writing the row to File (done if Set lists it)
	StateDone    = "done"    // the row is durable in File
)

// Record is the value of a dedup key "dedup/<device>/<id>".
type Record struct {
	State string    `json:"state"`
	Owner string    `json:"owner"` // replica name
	File  string    `json:"file"`  // lake-relative path of the owner's partition file
	At    time.Time `json:"at"`    // when the claim was made, owner's clock
	// Set is the key of the owner's done set that lists this record's key once the row is
	// durable (later.go): a pending record whose set lists it is done. Empty in done records
	// and in records written before done sets.
	Set string `json:"set,omitempty"`
	// Attempt numbers the claims of the owner's process (with Set, which names the process, it
	// tells one claim attempt from any other, even at the same clock reading): a batch of claims
	// that failed recognises the records it did create by it (create.go).
	Attempt uint64 `json:"attempt,omitempty"`
}

func (r Record) encode() []byte {
	b, _ := json.Marshal(r) // a struct of strings and a time: cannot fail
	return b
}

func decodeRecord(key string, b []byte) (Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return r, fmt.Errorf("%w: %s: %w", ErrBadRecord, key, err)
	}
	if r.State != StatePending && r.State != StateDone {
		return r, fmt.Errorf("%w: %s: state %q; want pending or done", ErrBadRecord, key, r.State)
	}
	return r, nil
}

// Key returns the dedup key of a message: its device and its identity within the device.
func Key(device, id string) string { return "dedup/" + device + "/" + id }
