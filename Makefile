# Estuary: `make run` starts the gateway on its embedded defaults, `make test` runs every test.
# Both install what they need (system packages via apt-get when missing; CI machines start bare).

CARGO ?= cargo
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: run test deps build-deps demo build build-release lint bench bench-deps bench-reference bench-cluster clean corpus fuzz

# ARGS passes overrides, e.g. make run ARGS='--set ims.next_hop=sip:10.0.0.5:5060'.
run: build-release
	./target/release/estuary run --config etc/estuary.toml $(ARGS)

build-release: build-deps demo
	$(CARGO) build --release -p estuary

# What the build itself needs on a bare Debian machine: cmake (libopus is built from source),
# nasm (OpenH264's assembly; without it the build silently falls back to slow C), pkg-config
# and libvpx-dev (VP8 links the system libvpx).
build-deps:
	@missing=""; \
	command -v cmake >/dev/null 2>&1 || missing="$$missing cmake"; \
	command -v nasm >/dev/null 2>&1 || missing="$$missing nasm"; \
	command -v pkg-config >/dev/null 2>&1 || missing="$$missing pkg-config"; \
	pkg-config --exists vpx 2>/dev/null || missing="$$missing libvpx-dev"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

# The demo softphone page (JsSIP bundled by esbuild into gateway/daemon/demo/dist), embedded
# into the binary at build time and served on the WS/WSS listeners. Versions are pinned by
# package-lock.json; node and npm are installed when missing.
demo:
	@command -v npm >/dev/null 2>&1 || { $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm; }
	cd gateway/daemon/demo && npm ci --no-audit --no-fund --loglevel=error && npm run build

build: build-deps
	$(CARGO) build -p estuary

# System packages the tests start for real: sipp (Debian's sip-tester) as the IMS user agent,
# Kamailio with its TLS module as the IMS core's registrar/proxy over SIP-over-TLS (openssl
# makes the test CA),
# tshark to check that our captures read back in Wireshark's dissectors, ffmpeg as the
# independent decoder of the video we encode, Debian's chromium as
# the browser (driven by playwright-core from npm, never a downloaded browser) and Debian's
# firefox-esr as the second one (driven by puppeteer-core over WebDriver BiDi), iproute2 for
# the loopback-only network namespaces browser tests run in, freeDiameter (freeDiameterd) as
# the independent Diameter peer of ims/diameter's interop test, HAProxy as the load balancer in
# front of the web listeners (PROXY protocol v2, X-Forwarded-For), dnsmasq (dnsmasq-base: the binary without the system service) as the IMS domain's
# name server (NAPTR/SRV, RFC 3263), redis-server as the cluster's shared state. What the
# build needs is
# build-deps (through build).
deps:
	@missing=""; \
	command -v sipp >/dev/null 2>&1 || missing="$$missing sip-tester"; \
	command -v ffmpeg >/dev/null 2>&1 || missing="$$missing ffmpeg"; \
	command -v tshark >/dev/null 2>&1 || missing="$$missing tshark"; \
	command -v chromium >/dev/null 2>&1 || missing="$$missing chromium"; \
	command -v firefox-esr >/dev/null 2>&1 || missing="$$missing firefox-esr"; \
	command -v ip >/dev/null 2>&1 || missing="$$missing iproute2"; \
	command -v kamailio >/dev/null 2>&1 && [ -f /usr/lib/x86_64-linux-gnu/kamailio/modules/tls.so ] || missing="$$missing kamailio kamailio-tls-modules"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v freeDiameterd >/dev/null 2>&1 || missing="$$missing freediameter"; \
	command -v haproxy >/dev/null 2>&1 || missing="$$missing haproxy"; \
	command -v dnsmasq >/dev/null 2>&1 || missing="$$missing dnsmasq-base"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v node >/dev/null 2>&1 || missing="$$missing nodejs npm"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi
	cd conformance/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 PUPPETEER_SKIP_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error

# Unit, engine (virtual clock), conformance (RFC 4475) and real-peer tests. The daemon binary
# is built first because the real-peer tests start it as a separate process.
test: deps demo build
	$(CARGO) test --workspace
	$(CARGO) test --manifest-path fuzz/Cargo.toml --target-dir $${CARGO_TARGET_DIR:-target}
	$(CARGO) build --manifest-path fuzz/Cargo.toml --bins --target-dir $${CARGO_TARGET_DIR:-target}

# Coverage-guided fuzzing (fuzz/README.md): each target in turn for FUZZ_SECONDS (default 60)
# under nightly libFuzzer, without a sanitizer (the parsers are safe Rust; a panic is the
# finding). Starts from the seeds fuzz/tests/seeds.rs gathers from the repository (written to
# target/fuzz/seeds) and the growing corpus in fuzz/corpus/NAME (not committed). A crash
# stops the run and leaves its input in fuzz/artifacts/NAME/: minimise it, fix it and commit
# it under fuzz/regressions/NAME/, where `make test` replays it on stable.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS := sip_message sdp stun rtp_rtcp sdes_fingerprint pcap b2bua
fuzz:
	@command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
	ESTUARY_FUZZ_SEEDS_OUT=$(CURDIR)/target/fuzz/seeds $(CARGO) test --manifest-path fuzz/Cargo.toml \
	  --target-dir $${CARGO_TARGET_DIR:-target} --test seeds write_seed_corpus
	cd fuzz && for t in $(FUZZ_TARGETS); do \
	  mkdir -p corpus/$$t && \
	  cargo +nightly fuzz run $$t --sanitizer none --target-dir ../target/fuzz corpus/$$t ../target/fuzz/seeds/$$t \
	    -- -max_total_time=$(FUZZ_SECONDS) -rss_limit_mb=2048 -timeout=10 || exit 1; \
	done

# Figures printed as tables and written as JSON under target/bench/:
# - relay.json, relay-500.json, relay-1000.json: the DTLS-SRTP <-> RTP relay and the call set-up
#   on the running release daemon (bench/src/bin/relay.rs), one run each at 200, 500 and 1,000
#   calls (relay.json is the 200-call run; 1,000 is labelled indicative: the generator shares
#   the two cores). Simulated browsers, each with its own WebSocket, are set up in phases (ws,
#   register, invite, ice, dtls) through the daemon to Kamailio as the IMS core (registrar and
#   record-routing proxy on 127.0.0.1, bench/ims-core/kamailio.cfg, started and stopped by the
#   benchmark; kamailio is installed when missing) in front of the in-process test peer, whose
#   media goes to and from the daemon directly. Keys: relay_cpu_us_per_packet (daemon CPU per
#   packet over a 15 s window), idle_cpu_fraction (10 s with every call up and media paused),
#   setup_cpu_ms_per_call and setup_cpu_ms_per_call_by_phase, pss_bytes_per_call, calls,
#   loss_ratio (a WARNING above 0.5%, except for the indicative run); Kamailio's CPU apart
#   (ims_core_*). BENCH_CALLS (a list), BENCH_SECONDS, BENCH_IDLE_SECONDS (together with the
#   2 s warm-up at most 60 s) and BENCH_IMS_CORE=testpeer (no Kamailio) change the load;
# - setup_rate.json: calls set up and torn down per second (bench/src/bin/setup_rate.rs): short
#   calls (WebSocket, REGISTER, INVITE, ICE, DTLS, 1 s of media, BYE) offered at 50, 100, 200,
#   300, 400 calls/s for 10 s each through the same daemon and core;
#   calls_per_second_sustained is the highest rate whose step completed >= 99% of its calls,
#   with the daemon's CPU per call there; BENCH_RATES and BENCH_STEP_SECONDS change it;
# - transcode.json: Opus <-> G.711 channels per core for the pipelines alone, next to raw
#   libopus on the same frames, memory per channel, and end to end on the daemon with 100
#   Opus-only browsers (bench/src/bin/transcode.rs);
# - diameter.json: Diameter Rx messages per second per core, in process (no daemon): a typical
#   initial AAR encoded, decoded and validated, and AAR/AAA round trips through two Peers back
#   to back (bench/src/bin/diameter.rs); BENCH_DIAMETER_ITERS changes the iterations per round;
# - rtp.json, srtp.txt: the per-packet engine costs in isolation (criterion).
bench: build-deps
	@command -v kamailio >/dev/null 2>&1 || [ "$$BENCH_IMS_CORE" = testpeer ] || { echo "installing: kamailio"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends kamailio; }
	@mkdir -p target/bench
	$(CARGO) build --release -p estuary -p estuary-bench
	ESTUARY_BIN=target/release/estuary BENCH_OUT=target/bench/relay.json ./target/release/relay
	ESTUARY_BIN=target/release/estuary BENCH_OUT=target/bench/setup_rate.json ./target/release/setup_rate
	ESTUARY_BIN=target/release/estuary BENCH_OUT=target/bench/transcode.json ./target/release/transcode
	BENCH_OUT=target/bench/video.json ./target/release/video
	BENCH_OUT=target/bench/diameter.json ./target/release/diameter
	$(CARGO) bench -p estuary-rtp --bench rtp 2>&1 | tee target/bench/rtp.txt
	@sed -n 's/^summary: \(.*[^ ]\)  *\([0-9.]*\) ns\/op.*/{"name": "\1", "ns_per_op": \2}/p' target/bench/rtp.txt \
	  | paste -sd, - | sed 's/^/{"rtp": [/; s/$$/]}/' > target/bench/rtp.json
	@echo "wrote target/bench/rtp.json"; cat target/bench/rtp.json
	$(CARGO) bench -p estuary-srtp --bench srtp 2>&1 | tee target/bench/srtp.txt

# Cluster scaling (bench/src/bin/cluster.rs): the set-up rate benchmark through HAProxy, with
# one node pinned to CPU 0 (taskset), then two pinned to CPUs 0 and 1, sharing state in Redis;
# prints both sustained rates and their ratio (the target: 2.0 within 10%) and writes
# target/bench/cluster.json. Installs kamailio, haproxy and redis-server when missing.
bench-cluster: build-deps
	@missing=""; \
	command -v kamailio >/dev/null 2>&1 || missing="$$missing kamailio"; \
	command -v haproxy >/dev/null 2>&1 || missing="$$missing haproxy"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi
	@mkdir -p target/bench
	$(CARGO) build --release -p estuary -p estuary-bench
	ESTUARY_BIN=target/release/estuary BENCH_OUT=target/bench/cluster.json ./target/release/cluster

# What only the reference mode of the relay benchmark starts: Kamailio with its WebSocket
# modules as the browsers' SIP front and rtpengine (userspace) as the media relay.
bench-deps:
	@missing=""; \
	command -v kamailio >/dev/null 2>&1 || missing="$$missing kamailio"; \
	[ -f /usr/lib/x86_64-linux-gnu/kamailio/modules/websocket.so ] || missing="$$missing kamailio-websocket-modules"; \
	command -v rtpengine >/dev/null 2>&1 || missing="$$missing rtpengine-daemon"; \
	if [ -n "$$missing" ]; then \
	  echo "installing:$$missing"; \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	  $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
	fi

# The relay benchmark's reference mode (bench/src/bin/relay.rs): in one invocation the same
# load (BENCH_CALLS, default 200; BENCH_SECONDS, default 15; BENCH_IDLE_SECONDS of paused
# media, default 10) through Estuary, Kamailio + rtpengine (bench/reference/, started and
# stopped by the benchmark on 127.0.0.1) and the bare relay that only receives and sends
# (bench/src/bin/bare_relay.rs, a socket per flow with epoll, then one shared socket with
# recvmmsg); prints each system's CPU per packet, idle CPU, PSS per call and loss, and
# Estuary's ratios to the others; writes target/bench/reference.json.
bench-reference: bench-deps
	@mkdir -p target/bench
	$(CARGO) build --release -p estuary -p estuary-bench
	ESTUARY_BIN=target/release/estuary BENCH_REFERENCE=1 \
	  BENCH_REFERENCE_OUT=target/bench/reference.json ./target/release/relay

# Re-records the replay corpus (conformance/captures) from real sessions: Chromium + JsSIP
# demo page <-> daemon <-> sipp. Review the diff (estuary replay says what changed), commit.
corpus: deps demo build
	ESTUARY_RECORD_CORPUS=1 $(CARGO) test -p estuary-conformance --test corpus_record -- --test-threads=1 --nocapture

lint:
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	@# Engines stay sans-IO: only the daemon may depend on tokio.
	@for p in estuary-sip estuary-transaction estuary-b2bua estuary-sdp estuary-ice estuary-srtp estuary-rtp estuary-media estuary-core estuary-config estuary-ims-profile estuary-diameter estuary-rx estuary-testpeer estuary-transcoder estuary-pcap; do \
	  if $(CARGO) tree -p $$p -e normal 2>/dev/null | grep -q ' tokio '; then echo "$$p depends on tokio"; exit 1; fi; \
	done

clean:
	$(CARGO) clean
	rm -rf gateway/daemon/demo/dist
