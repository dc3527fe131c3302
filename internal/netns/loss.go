package netns

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

// Direction selects which way a Loss rule drops packets on its interface.
type Direction string

const (
	Ingress Direction = "ingress" // packets arriving on the interface
	Egress  Direction = "egress"  // packets leaving through the interface
)

// LossRule describes random packet loss on one interface of a namespace.
// It works on any kernel with nftables netdev hooks (no netem needed).
type LossRule struct {
	Iface   string
	Dir     Direction
	Percent int // 0..100; each matching packet is dropped with this chance
	// IPProto, when not 0, limits the loss to one IP protocol (113 = PGM);
	// IGMP and ARP then pass untouched.
	IPProto uint8
}

// script returns the nft script that creates the rule's table.
func (r LossRule) script(table string) string {
	match := ""
	if r.IPProto != 0 {
		match = fmt.Sprintf("meta protocol ip ip protocol %d ", r.IPProto)
	}
	return fmt.Sprintf(`table netdev %s {
	chain loss {
		type filter hook %s device %q priority 0; policy accept;
		%snumgen random mod 100 < %d counter drop
	}
}
`, table, r.Dir, r.Iface, match, r.Percent)
}

// AddLoss installs r in ns as its own nftables table and returns the
// table's name, for Dropped and DeleteLoss.
func (ns *NS) AddLoss(r LossRule) (string, error) {
	if r.Percent < 0 || r.Percent > 100 {
		return "", fmt.Errorf("netns: loss percent %d out of range", r.Percent)
	}
	if r.Dir != Ingress && r.Dir != Egress {
		return "", fmt.Errorf("netns: bad loss direction %q", r.Dir)
	}
	table := strings.ReplaceAll(Prefix, "-", "_") + "loss_" + RandSuffix(8)
	cmd := ns.Command(context.Background(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(r.script(table))
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("netns %s: nft add table %s: %v: %s", ns.Name, table, err, out)
	}
	return table, nil
}

// DeleteLoss removes a table made by AddLoss.
func (ns *NS) DeleteLoss(table string) error {
	_, err := ns.Run("nft", "delete", "table", "netdev", table)
	return err
}

// Loss is AddLoss that fails the test on error and removes the table in
// t.Cleanup.
func (ns *NS) Loss(t testing.TB, r LossRule) string {
	t.Helper()
	table, err := ns.AddLoss(r)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if !Exists(ns.Name) {
			return
		}
		if err := ns.DeleteLoss(table); err != nil {
			t.Errorf("nft delete table %s: %v", table, err)
		}
	})
	return table
}

// Dropped returns how many packets the loss table has dropped so far.
func (ns *NS) Dropped(table string) (uint64, error) {
	out, err := ns.Run("nft", "list", "table", "netdev", table)
	if err != nil {
		return 0, err
	}
	// "... counter packets N bytes M drop"
	f := strings.Fields(out)
	for i := 0; i+1 < len(f); i++ {
		if f[i] == "packets" {
			var n uint64
			if _, err := fmt.Sscan(f[i+1], &n); err != nil {
				return 0, fmt.Errorf("nft counter %q: %w", f[i+1], err)
			}
			return n, nil
		}
	}
	return 0, fmt.Errorf("nft table %s: no counter in %q", table, out)
}
