package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"testing"
)

// compNet is a network namespace of its own for the components of a stack, joined to the host by a
// veth pair: the components reach the broker at hostIP through it, everything else (publisher,
// daprd, app) stays in the host namespace. partition drops every packet crossing the pair in both
// directions (an nftables table of its own, so nothing else on the machine is touched), the way a
// failed switch or a cut cable does: no RST, no ICMP, connections just go silent; heal removes the
// table. Linux only, as root, with ip (iproute2) and nft.
type compNet struct {
	t            testing.TB
	ns, hostIf   string
	table        string
	hostIP, nsIP string
	partitioned  atomic.Bool
}

var compNetSeq atomic.Int32

// newCompNet creates the namespace and the veth pair, or returns why it cannot.
func newCompNet(t testing.TB) (*compNet, error) {
	t.Helper()
	if os.Geteuid() != 0 {
		return nil, fmt.Errorf("network namespaces need root (running as uid %d)", os.Geteuid())
	}
	for _, tool := range []string{"ip", "nft"} {
		if _, err := exec.LookPath(tool); err != nil {
			return nil, fmt.Errorf("%s not found (Debian packages iproute2, nftables)", tool)
		}
	}
	n := int(compNetSeq.Add(1))
	id := fmt.Sprintf("%d%d", os.Getpid()%100000, n)
	// One /30 per namespace: 10.231.<x>.<4y>; x, y from the pid and a counter, so that two test
	// processes on the machine pick different ones.
	k := (os.Getpid()*7 + n) % (250 * 63)
	x, y := k/63, (k%63)*4
	c := &compNet{t: t, ns: "mqd" + id, hostIf: "mqdh" + id, table: "mqdpart" + id,
		hostIP: fmt.Sprintf("10.231.%d.%d", x, y+1), nsIP: fmt.Sprintf("10.231.%d.%d", x, y+2)}
	if len(c.hostIf) > 15 { // IFNAMSIZ
		c.hostIf = c.hostIf[:15]
	}
	nsIf := "mqdn" + id
	if len(nsIf) > 15 {
		nsIf = nsIf[:15]
	}
	t.Cleanup(c.remove)
	for _, args := range [][]string{
		{"netns", "add", c.ns},
		{"link", "add", c.hostIf, "type", "veth", "peer", "name", nsIf, "netns", c.ns},
		{"addr", "add", c.hostIP + "/30", "dev", c.hostIf},
		{"link", "set", c.hostIf, "up"},
		{"-n", c.ns, "addr", "add", c.nsIP + "/30", "dev", nsIf},
		{"-n", c.ns, "link", "set", nsIf, "up"},
		{"-n", c.ns, "link", "set", "lo", "up"},
	} {
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			return nil, fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return c, nil
}

// wrap returns the command line that runs bin inside the namespace (ip netns exec execs bin, so
// the process started is bin itself and a signal to it reaches bin).
func (c *compNet) wrap(bin string, args ...string) (string, []string) {
	return "ip", append([]string{"netns", "exec", c.ns, bin}, args...)
}

func (c *compNet) nft(script string) {
	c.t.Helper()
	cmd := exec.Command("nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	if out, err := cmd.CombinedOutput(); err != nil {
		c.t.Fatalf("nft: %v: %s\n%s", err, strings.TrimSpace(string(out)), script)
	}
}

// partition drops every packet between the components and the broker, both ways.
func (c *compNet) partition() {
	c.t.Helper()
	c.nft(fmt.Sprintf(`table inet %[1]s {
	chain in { type filter hook input priority -10; policy accept; iifname "%[2]s" drop; }
	chain out { type filter hook output priority -10; policy accept; oifname "%[2]s" drop; }
}
`, c.table, c.hostIf))
	c.partitioned.Store(true)
}

// heal ends the partition.
func (c *compNet) heal() {
	c.t.Helper()
	c.nft(fmt.Sprintf("delete table inet %s\n", c.table))
	c.partitioned.Store(false)
}

func (c *compNet) remove() {
	if c.partitioned.Load() {
		_ = exec.Command("nft", "delete", "table", "inet", c.table).Run()
	}
	_ = exec.Command("ip", "netns", "del", c.ns).Run() // removes the pair with it
}
