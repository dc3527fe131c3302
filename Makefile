# pgmtun — the project's commands. `make check` is what CI runs.
GO        ?= go
PKGS      ?= ./...
FUZZTIME  ?= 60s

# Debian packages the test suite needs: tshark (dissector checks), libpgm-dev and
# pkg-config (real OpenPGM interop peers), iproute2 and nftables (namespaces, loss),
# python3-zmq (libzmq 4.3 with PGM, under Debian's own /usr/bin/python3: ZeroMQ interop).
DEB_PKGS  := tshark libpgm-dev pkg-config iproute2 nftables gcc python3-zmq

.PHONY: check deps vet test fuzz bench demo

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
# of the property-test seeds; the second line sweeps thousands without it.
test:
	$(GO) test -race -count=1 -timeout 25m $(PKGS)
	$(GO) test -count=1 -run Property ./pgmproto/sim -sim.seeds 2000

demo:
	$(GO) run ./cmd/pgmtun demo

# fuzz runs every go-test fuzz target for FUZZTIME each (default 60s; the
# committed corpora under */testdata/fuzz are replayed by `make check` too).
# New inputs are minimized for at most 2s: with the default 60s, FuzzDump
# (3 KB pcap seeds) spent most of its time minimizing and its exec count
# stood still for tens of seconds, which looked like a hang.
FUZZ_TARGETS := \
	./pgmproto/wire:FuzzParse \
	./pgmproto/wire:FuzzOptions \
	./pgmproto/engine:FuzzReceiver \
	./pgmproto/engine:FuzzSource \
	./pgmproto/engine:FuzzFECReceiver \
	./pgmproto/engine:FuzzFECSource \
	./pgmproto/zmtp:FuzzDecoder \
	./pgmproto/zmtp:FuzzRoundTrip \
	./internal/pcapio:FuzzReader \
	./stack:FuzzReceivePath \
	./stack:FuzzUDPReceivePath \
	./tun:FuzzFDEndpointParse \
	./cmd/pgmtun:FuzzDump

fuzz:
	@set -e; for t in $(FUZZ_TARGETS); do \
		pkg=$${t%%:*}; fn=$${t##*:}; \
		echo "== $$fn ($$pkg) for $(FUZZTIME)"; \
		$(GO) test -run='^$$' -fuzz="^$$fn\$$" -fuzztime=$(FUZZTIME) -fuzzminimizetime=2s $$pkg; \
	done

# bench runs every benchmark case (5 runs each; the TUN, TAP and OpenPGM
# cases need root) and writes bench/REPORT.md and its SVG plots. It takes
# about 20 minutes on a 2-core machine since the receive, flood, FEC and
# simulator cases came in: the 30-minute budget leaves room (15 cut the
# last cases).
bench: deps
	$(GO) run ./bench -out bench -budget 30m
