# pgmtun — the project's commands. `make check` is what CI runs.
GO        ?= go
PKGS      ?= ./...
FUZZTIME  ?= 60s

# Debian packages the test suite needs: tshark (dissector checks), libpgm-dev and
# pkg-config (real OpenPGM interop peers), iproute2 and nftables (namespaces, loss),
# python3-zmq (libzmq 4.3 with PGM, under Debian's own /usr/bin/python3: ZeroMQ interop),
# libzmq3-dev (the same libzmq from C: the ZeroMQ bench's peer, bench/peers/zmqbench.c,
# built by bench and by its test TestZMQBenchRecords).
DEB_PKGS  := tshark libpgm-dev pkg-config iproute2 nftables gcc python3-zmq libzmq3-dev

.PHONY: check deps vet test fuzz fuzz-long bench demo

check: deps vet test

# deps installs whatever the tests need and is missing; it never prompts.
deps:
	@missing=""; \
	command -v tshark >/dev/null 2>&1 || missing="$$missing tshark"; \
	pkg-config --exists openpgm-5.3 2>/dev/null || missing="$$missing libpgm-dev pkg-config"; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v nft >/dev/null 2>&1 || missing="$$missing nftables"; \
	command -v gcc >/dev/null 2>&1 || missing="$$missing gcc"; \
	/usr/bin/python3 -c 'import zmq, sys; sys.exit(not zmq.has("pgm"))' >/dev/null 2>&1 || missing="$$missing python3-zmq"; \
	pkg-config --exists libzmq 2>/dev/null || missing="$$missing libzmq3-dev pkg-config"; \
	if [ -n "$$missing" ]; then \
		echo "installing:$$missing"; \
		SUDO=""; [ "$$(id -u)" = 0 ] || SUDO="sudo"; \
		$$SUDO apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	$(GO) mod download

vet:
	$(GO) vet $(PKGS)

# The race detector slows the simulator ~10x, so the race run covers a tenth
# of the property-test seeds; the last line sweeps thousands without it.
#
# REALTIME_TESTS run first, alone and without the race detector, while the
# machine is quiet: `pgmtun recv` (a binary built without -race) must keep
# up with OpenPGM's unlimited sender, whose 1000-sequence window is a few
# milliseconds, so a reader stall of that length is unrecoverable loss.
# Beside the race run's other packages on two cores recv lost a run in
# about one CI pass of three (bench/NOTES.md, session 14), and run just
# after it once in session 15's first clean-clone pass (0 of 8 alone).
REALTIME_TESTS := ^TestRecvUnlimitedOpenPGM$$
test:
	$(GO) test -count=1 -timeout 10m -run '$(REALTIME_TESTS)' ./cmd/pgmtun
	$(GO) test -race -count=1 -timeout 25m -skip '$(REALTIME_TESTS)' $(PKGS)
	$(GO) test -count=1 -run Property ./pgmproto/sim -sim.seeds 2000

demo:
	$(GO) run ./cmd/pgmtun demo

# fuzz runs every go-test fuzz target for FUZZTIME each (default 60s; the
# committed corpora under */testdata/fuzz are replayed by `make check` too).
# New inputs are minimized for at most 2s: with the default 60s, FuzzDump
# (3 KB pcap seeds) spent most of its time minimizing and its exec count
# stood still for tens of seconds, which looked like a hang.
# scripts/fuzz.sh runs every target even when one fails, retries once a
# run that Go 1.26's coordinator ends with a spurious "context deadline
# exceeded" (no failing input written), prints each target's result and
# fails at the end if any target found a failing input.
FUZZ_TARGETS := \
	./pgmproto/wire:FuzzParse \
	./pgmproto/wire:FuzzOptions \
	./pgmproto/engine:FuzzReceiver \
	./pgmproto/engine:FuzzSource \
	./pgmproto/engine:FuzzFECReceiver \
	./pgmproto/engine:FuzzFECSource \
	./pgmproto/engine:FuzzPGMCCReceiver \
	./pgmproto/engine:FuzzPGMCCSource \
	./pgmproto/zmtp:FuzzDecoder \
	./pgmproto/zmtp:FuzzRoundTrip \
	./internal/pcapio:FuzzReader \
	./stack:FuzzReceivePath \
	./stack:FuzzUDPReceivePath \
	./stack:FuzzStackSequence \
	./link/tun:FuzzFDEndpointParse \
	./cmd/pgmtun:FuzzDump

fuzz:
	GO=$(GO) sh scripts/fuzz.sh $(FUZZTIME) 2s $(FUZZ_TARGETS)

# fuzz-long is the campaign: FUZZLONG executions per target (default 1e8;
# an exec count has no wall-clock deadline, so the coordinator flake does
# not occur), then scripts/fuzz-corpus.sh copies the inputs the campaign
# found interesting from Go's cache into testdata/fuzz (smallest first, at
# most FUZZ_CORPUS_BYTES and FUZZ_CORPUS_FILES per target) to be
# committed. The README gives the rates and how long it takes.
FUZZLONG          ?= 100000000x
FUZZ_CORPUS_BYTES ?= 16384
FUZZ_CORPUS_FILES ?= 40

fuzz-long:
	GO=$(GO) sh scripts/fuzz.sh $(FUZZLONG) 2s $(FUZZ_TARGETS); rc=$$?; \
	GO=$(GO) sh scripts/fuzz-corpus.sh $(FUZZ_CORPUS_BYTES) $(FUZZ_CORPUS_FILES) $(FUZZ_TARGETS); \
	exit $$rc

# bench runs every benchmark case (5 runs each; the TUN, TAP, OpenPGM and
# libzmq cases need root) and writes bench/REPORT.md and its SVG plots. With
# the ZeroMQ ramps of both placements it took 30m21s here (2026-12-05); the
# budget, which stops starting cases once spent, is 45 minutes.
bench: deps
	$(GO) run ./bench -out bench -budget 45m
