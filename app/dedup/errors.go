// Package dedup makes lake writes idempotent across redeliveries and replicas: a dedup record per
// message identity, kept in the shared state store, is claimed before the row is written and
// marked done after the row is durable. See app/README.md for the algorithm and its guarantee.
package dedup

import "errors"

// ErrClaimedElsewhere is returned by Claim while another replica holds a fresh claim on the same
// message (it is writing it now, or crashed less than ClaimTTL ago). Retriable: a later delivery
// finds the record done (a duplicate) or the claim stale (taken over).
var ErrClaimedElsewhere = errors.New("dedup: message claimed by another replica")

// ErrContention is returned when the record kept changing under Claim; retriable.
var ErrContention = errors.New("dedup: dedup record kept changing")

// ErrBadRecord is returned when a dedup record in the store cannot be decoded.
var ErrBadRecord = errors.New("dedup: malformed dedup record")

// ErrLeaseExpired is returned by Claim.Check when the claim is too old to write under: another
// replica may take it over. Retriable (the redelivery claims afresh).
var ErrLeaseExpired = errors.New("dedup: claim lease expired before the write")
