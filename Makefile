# The README's two commands: `make run` and `make test`. Everything else is
# here to serve them; CMake does the building.
SHELL := /bin/bash
BUILD      ?= build
ASAN_BUILD ?= build-asan
RELEASE_BUILD ?= build-release
FUZZ_BUILD ?= build-fuzz
JOBS       ?= $(shell nproc 2>/dev/null || echo 2)
SHARED     ?= ../shared
FUZZ_SECONDS ?= 60
HUBUD_ARGS ?=

.PHONY: all deps build build-asan build-release run test fuzz bench clean

all: build

deps:
	@scripts/install-deps.sh

build: deps
	@cmake -S . -B $(BUILD) -DCMAKE_BUILD_TYPE=RelWithDebInfo \
	  -DHUBU_EXTRA_TEST_TREE=$(CURDIR)/$(ASAN_BUILD) >/dev/null
	@cmake --build $(BUILD) -j $(JOBS)

build-asan: deps
	@cmake -S . -B $(ASAN_BUILD) -DCMAKE_BUILD_TYPE=Debug -DHUBU_SANITIZE=ON \
	  -DHUBU_TEST_PREFIX=asan. >/dev/null
	@cmake --build $(ASAN_BUILD) -j $(JOBS)

# What packagers build: -O3 without the tests, still under -Werror.
build-release: deps
	@cmake -S . -B $(RELEASE_BUILD) -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF >/dev/null
	@cmake --build $(RELEASE_BUILD) -j $(JOBS)

# Starts hubud on loopback with the embedded store in ./data and the shipped plugins.
run: build
	@mkdir -p data
	@scripts/gen-dev-cert.sh data >/dev/null
	exec ./$(BUILD)/hubud --data data --plugins plugins \
	  --tls-listen 127.0.0.1:7701 --cert data/dev-cert.pem --key data/dev-key.pem --dev-login on $(HUBUD_ARGS)

# Every suite, plain and under ASan+UBSan, counted by one ctest run; the
# Release build must compile too. When a test fails, the log ends with what
# each failed test printed (scripts/ctest-failures.sh).
test: build-asan build build-release
	@if [ -x $(SHARED)/tools/protocheck.py ]; then \
	  $(SHARED)/tools/protocheck.py proto/hubu.proto $(SHARED)/PROTOCOL.md; \
	else echo "protocheck: $(SHARED)/tools/protocheck.py not found, skipped"; fi
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600 || \
	  { $(CURDIR)/scripts/ctest-failures.sh . ; exit 8; }

# libFuzzer on each input path for FUZZ_SECONDS each: fuzz_frame (frames and
# their bodies), fuzz_body (bodies as the server judges and stores them),
# fuzz_admin (the admin HTTP listener), fuzz_ws (the HTTP listener's request,
# upgrade and WebSocket frames, hubu.v1.json and HTTP API requests),
# fuzz_proxy (the PROXY protocol v1/v2 header of a --proxy-protocol
# listener), fuzz_json (the JSON form of every message). Each runs on its working corpus,
# $(FUZZ_BUILD)/corpus/<path>, seeded from the kept one, tests/fuzz_corpus/<path>;
# then the inputs that reach code no kept one reaches (-merge=1, by edges only,
# so the kept corpus stays small) are added to the kept corpus: commit them.
FUZZ_TARGETS ?= frame body admin ws proxy json

fuzz: deps
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DHUBU_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug -DBUILD_TESTING=OFF >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) $(foreach t,$(FUZZ_TARGETS),--target fuzz_$(t))
	@set -e; for t in $(FUZZ_TARGETS); do \
	  case $$t in admin) len=16384 ;; proxy) len=8192 ;; *) len=4096 ;; esac; \
	  mkdir -p $(FUZZ_BUILD)/corpus/$$t; \
	  echo "fuzz_$$t: $(FUZZ_SECONDS) s, -max_len=$$len"; \
	  ./$(FUZZ_BUILD)/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -max_len=$$len -timeout=30 -print_final_stats=1 \
	    -artifact_prefix=$(FUZZ_BUILD)/ \
	    $(FUZZ_BUILD)/corpus/$$t tests/fuzz_corpus/$$t; \
	  ./$(FUZZ_BUILD)/fuzz_$$t -merge=1 -use_counters=0 -max_len=$$len -timeout=30 tests/fuzz_corpus/$$t $(FUZZ_BUILD)/corpus/$$t; \
	done

bench: build
	./$(BUILD)/hubu-bench --help

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(RELEASE_BUILD) $(FUZZ_BUILD)
