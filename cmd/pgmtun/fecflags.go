package main

import (
	"flag"
	"fmt"

	"github.com/pgmtun/pgmtun/stack"
)

// fecFlags are the forward error correction flags of send and demo: a
// sender setting (receivers learn it from the source's SPMs).
type fecFlags struct {
	group     uint
	proactive uint
	ondemand  bool
}

// fecBlockSize is n, the code's block: the largest, so that on-demand
// parity can give any group up to 255 − k distinct parity packets.
const fecBlockSize = 255

func (f *fecFlags) register(fs *flag.FlagSet) {
	fs.UintVar(&f.group, "fec-group", 0, "forward error correction: Reed-Solomon parity over transmission groups of `K`\npackets (a power of two, 2..128), OpenPGM's code; needs --fec-proactive or --fec-ondemand")
	fs.UintVar(&f.proactive, "fec-proactive", 0, "with --fec-group: `H` parity packets sent after every group")
	fs.BoolVar(&f.ondemand, "fec-ondemand", false, "with --fec-group: answer a receiver's parity NAK with as many parity packets as\nit lost in the group, one repair for different losses at different receivers")
}

// resolve checks the flags; the zero FEC is off.
func (f *fecFlags) resolve() (stack.FEC, error) {
	if f.group == 0 {
		if f.proactive != 0 || f.ondemand {
			return stack.FEC{}, fmt.Errorf("--fec-proactive and --fec-ondemand need --fec-group")
		}
		return stack.FEC{}, nil
	}
	if f.group < 2 || f.group > 128 || f.group&(f.group-1) != 0 {
		return stack.FEC{}, fmt.Errorf("--fec-group %d: want a power of two from 2 to 128", f.group)
	}
	if f.proactive == 0 && !f.ondemand {
		return stack.FEC{}, fmt.Errorf("--fec-group %d sends no parity: add --fec-proactive H or --fec-ondemand", f.group)
	}
	if most := fecBlockSize - f.group; f.proactive > most {
		return stack.FEC{}, fmt.Errorf("--fec-proactive %d: at most %d with --fec-group %d", f.proactive, most, f.group)
	}
	return stack.FEC{BlockSize: fecBlockSize, GroupSize: uint8(f.group),
		ProactivePacketsPerGrp: uint8(f.proactive), OnDemandEnabled: f.ondemand}, nil
}

// applyFEC sets fec on a sender socket between Bind and Connect.
func applyFEC(s *stack.Socket, fec stack.FEC) error {
	if fec.GroupSize == 0 {
		return nil
	}
	if err := s.SetFEC(fec); err != nil {
		return fmt.Errorf("--fec-group: %w", err)
	}
	return nil
}
