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
	  --tls-listen 127.0.0.1:7701 --cert data/dev-cert.pem --key data/dev-key.pem $(HUBUD_ARGS)

# Every suite, plain and under ASan+UBSan, counted by one ctest run; the
# Release build must compile too.
test: build-asan build build-release
	@if [ -x $(SHARED)/tools/protocheck.py ]; then \
	  $(SHARED)/tools/protocheck.py proto/hubu.proto $(SHARED)/PROTOCOL.md; \
	else echo "protocheck: $(SHARED)/tools/protocheck.py not found, skipped"; fi
	@cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 600

# libFuzzer over the frame and body decoder, for a bounded time.
fuzz: deps
	@CC=clang cmake -S . -B $(FUZZ_BUILD) -DHUBU_FUZZ=ON -DCMAKE_BUILD_TYPE=Debug >/dev/null
	@cmake --build $(FUZZ_BUILD) -j $(JOBS) --target fuzz_frame
	@mkdir -p $(FUZZ_BUILD)/corpus
	./$(FUZZ_BUILD)/fuzz_frame -max_total_time=$(FUZZ_SECONDS) -max_len=4096 $(FUZZ_BUILD)/corpus tests/fuzz_corpus/frame

bench: build
	./$(BUILD)/hubu-bench --help

clean:
	rm -rf $(BUILD) $(ASAN_BUILD) $(RELEASE_BUILD) $(FUZZ_BUILD)
