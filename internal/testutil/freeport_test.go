package testutil

import "testing"

// Ports handed out in one process never repeat: 2,000 calls in a row (the e2e tests make a few
// hundred) reach the birthday bound of the kernel's ephemeral range, where closing the probe
// listener and binding port 0 again used to return a port already given to another program.
func TestFreePortNeverRepeats(t *testing.T) {
	seen := map[int]bool{}
	for range 2000 {
		p := FreePort(t)
		if seen[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		seen[p] = true
	}
}
