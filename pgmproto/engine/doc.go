// Package engine implements PGM (RFC 3208) reliable delivery as two sans-IO
// state machines: a Source, which keeps a transmit window and serves
// repairs, and a Receiver, which detects loss and recovers it with the
// RFC's NAK state machine, for every session (TSI) heard on one group and
// port.
//
// The engines do no I/O, start no goroutines and read no clock: the caller
// passes the current time into every call (any monotonic time.Time; the
// simulator uses virtual time) and a seeded *rand.Rand to the Receiver. The
// same code runs under the gVisor stack, in the simulator (pgmproto/sim)
// and under the fuzzer.
//
// # Driving an engine
//
// After anything happens — an application Send, a packet arriving
// (HandlePacket), or the time returned by NextDeadline passing — call
// Next(now) until it reports false and transmit each packet it returns;
// for a Receiver also call NextEvent until it reports false. Then arm a
// timer for NextDeadline. A deadline at or before now means "call Next
// again now"; false means no timer is pending.
//
// # Ownership
//
// Transmit.Packet points into a buffer owned by the engine and is valid
// only until the next call on the same engine: write or copy it first.
// Packets passed to HandlePacket and APDUs passed to Send are never
// retained (the engines copy what they keep). Event.Data is handed over to
// the caller, who may give it back with Receiver.Recycle once finished
// with it; a caller that does gets no allocation per delivered packet.
//
// Memory: the transmit window copies each TSDU into a buffer that belongs
// to its ring slot and is reused by later sequences (at most TXWSqns
// buffers, the window's peak use); a receive window takes payload buffers
// in power-of-two size classes from a bounded free list refilled by
// reassembly and Recycle, and everything it holds (payloads and per-sequence
// state) counts against Config.RXWBudget and ReceiveBudget.
//
// # Semantics
//
// The transmit window works as OpenPGM's (the last TXWSqns packets, the
// oldest evicted to make room) or, when Config.TXWSecs is set, as
// Winsock's (each packet kept TXWSecs, Send returning ErrWindowFull while
// the window is full). Packets with a repair pending stay in it (unless
// repairs are so backlogged that original data falls short of its share),
// and a closed source keeps serving repairs until its window has passed
// the last sequence. All output passes a token bucket; repairs have their
// own budget within it (RDATARate, two thirds of the rate by default), shared by
// RDATA and NCFs, and take weighted turns with original data, so no NAK
// load stops ODATA. NCFs confirm up to 63 sequences each, a sequence is
// confirmed and repaired at most once per RepairHoldOff, repairs go oldest
// first, and NAKs beyond AddrNAKRate from one address are dropped.
//
// The receive window follows the source (its SPMs and data trail up to the
// highest sequence seen), bounded by the budgets, not by a local rate:
// when they are full the oldest holes are given up and reported lost.
// NAKs are paced (Config.NAKRate), oldest holes first. The receiver
// delivers APDUs in order, exactly once, reassembled from OPT_FRAGMENT;
// whatever cannot be delivered is reported by an EventLoss naming the
// exact sequences, never skipped silently. A session is offered
// (EventNewSession) on its first ODATA and ends with EventEnd (OPT_FIN,
// or FINTimeout of silence after it), EventReset (OPT_RST) or
// EventExpired.
//
// # NAK back-off
//
// A receiver waits a random back-off of up to NAKBOIvl before it NAKs a
// gap; an NCF heard meanwhile suppresses its NAK. A uniform back-off, as
// OpenPGM's (NAKBackoffUniform), gives about 1 + (N−1)·RTT/NAKBOIvl NAKs
// per loss shared by N receivers. The default, NAKBackoffAdaptive, is
// uniform until NCFs show other receivers sharing the losses; then the
// receivers that usually NAK first draw early and the others late, which
// keeps NAKs near one per loss. Config.NAKBackoff = NAKBackoffExponential
// draws it from a truncated exponential distribution instead (NORM's
// feedback timer, λ = ln(NAKGroupSize) + 1), sized by an expected group
// rather than learnt, which the default needs no setting for. It sends far fewer
// duplicate NAKs, but the first NAK, and so the repair, comes later (one
// receiver waits 0.79·NAKBOIvl on average instead of 0.5·NAKBOIvl). Every
// back-off comes from the Receiver's RNG, so seeded runs reproduce.
package engine
