# Thin wrapper around CMake. See CMakeLists.txt for the real build.
#
#   make                 configure + build the ferry binary (Release) in build/ (build/ferry);
#                        needs no test tools (Criterion is only needed by the test targets)
#   make run             setup, build build/ferry only, start the demo (upstream :9000, ferry :8080)
#   make test            setup, build with -Werror in build-test/, ctest (unit) + pytest
#                        (integration). Its own directory: switching between `make` and
#                        `make test` rebuilds nothing.
#   make test-sanitize   same with ASan+UBSan, clang, in build-asan/, free lists bypassed
#   make test-tsan       integration tests only, ferry built with TSan (clang), build-tsan/;
#                        not run by CI (Criterion does not work under TSan)
#   make fuzz            build libFuzzer targets in build-fuzz/, run each FUZZ_SECONDS
#   make stress          tests/stress/stress_exchange in build-asan/ for STRESS_SECONDS (20),
#                        fresh seed; STRESS_ARGS adds flags (--seed N replays; see --help)
#   make format          clang-format -i every C file under src tests fuzz
#   make format-check    fail if any C file is not clang-formatted
#   make clean
#
# Variables: CC (compiler for build/), CLANG (compiler for sanitize/tsan/fuzz builds),
# BUILD_TYPE, JOBS, FUZZ_SECONDS, PYTHON, PYTEST_ARGS, CTEST_ARGS.

MAKEFLAGS    += --no-print-directory

BUILD_DIR    := build
TEST_DIR     := build-test
ASAN_DIR     := build-asan
TSAN_DIR     := build-tsan
FUZZ_DIR     := build-fuzz

BUILD_TYPE   ?= Release
JOBS         ?= $(shell nproc 2>/dev/null || echo 2)
CLANG        ?= clang
PYTHON       ?= /usr/bin/python3
FUZZ_SECONDS ?= 30
PYTEST_ARGS  ?=
CTEST_ARGS   ?=

# Only force a compiler when the user gave one (make CC=clang, or CC in the environment);
# otherwise CMake picks its default (cc) or keeps whatever the build dir already uses.
ifneq ($(filter $(origin CC),environment command line override file),)
CC_FLAG := -DCMAKE_C_COMPILER=$(CC)
else
CC_FLAG :=
endif

ASAN_ENV := ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
            UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
TSAN_ENV := TSAN_OPTIONS=halt_on_error=1:second_deadlock_stack=1

# $(1) build dir, $(2) extra cmake arguments, $(3) cmake --build arguments (e.g. --target ferry)
define cmake_build
	cmake -S . -B $(1) -DCMAKE_BUILD_TYPE=$(BUILD_TYPE) $(2)
	cmake --build $(1) -j $(JOBS) $(3)
endef

# $(1) build dir, $(2) environment for the tests
define run_tests
	$(2) ctest --test-dir $(1) --output-on-failure $(CTEST_ARGS)
	@if [ -z "$$(find tests/integration \( -name 'test_*.py' -o -name '*_test.py' \) 2>/dev/null | head -n 1)" ]; then \
	    echo "pytest: no test files in tests/integration, skipping integration tests"; \
	else \
	    echo "pytest: FERRY_BIN=$(abspath $(1)/ferry)"; \
	    rc=0; \
	    env $(2) FERRY_BIN=$(abspath $(1)/ferry) $(PYTHON) -m pytest -q tests/integration $(PYTEST_ARGS) || rc=$$?; \
	    if [ $$rc -eq 5 ]; then echo "pytest: no tests collected in tests/integration, skipping"; rc=0; fi; \
	    exit $$rc; \
	fi
endef

.PHONY: all build run test test-sanitize test-tsan fuzz format format-check clean setup bench-parser

all: build

# build/ holds the user's binary only: no test binaries, no -Werror, no Criterion needed.
build:
	$(call cmake_build,$(BUILD_DIR),$(CC_FLAG) -DFERRY_WERROR=OFF,--target ferry)

setup:
	./scripts/setup.sh

run: setup
	$(call cmake_build,$(BUILD_DIR),$(CC_FLAG) -DFERRY_WERROR=OFF,--target ferry)
	./scripts/run-demo.sh

test: setup
	$(call cmake_build,$(TEST_DIR),$(CC_FLAG) -DFERRY_WERROR=ON -DFERRY_TESTS=ON)
	$(call run_tests,$(TEST_DIR),)

test-sanitize: setup
	$(call cmake_build,$(ASAN_DIR),-DCMAKE_C_COMPILER=$(CLANG) -DFERRY_WERROR=ON -DFERRY_TESTS=ON -DFERRY_SANITIZE=ON -DFERRY_NO_FREELIST=ON)
	$(call run_tests,$(ASAN_DIR),$(ASAN_ENV))

test-tsan: setup
	$(call cmake_build,$(TSAN_DIR),-DCMAKE_C_COMPILER=$(CLANG) -DFERRY_WERROR=ON -DFERRY_TSAN=ON)
	$(call run_tests,$(TSAN_DIR),$(TSAN_ENV))

# Each fuzz/fuzz_<x>.c runs for FUZZ_SECONDS. Seeds come from fuzz/corpus/fuzz_<x>/ (read
# only); new inputs go to build-fuzz/corpus/fuzz_<x>/ and crashes to build-fuzz/artifacts/.
# fuzz/fuzz_<x>.dict is passed as -dict when present.
fuzz: setup
	$(call cmake_build,$(FUZZ_DIR),-DCMAKE_C_COMPILER=$(CLANG) -DFERRY_FUZZ=ON)
	@set -e; \
	targets=$$(ls fuzz/fuzz_*.c 2>/dev/null || true); \
	if [ -z "$$targets" ]; then echo "fuzz: no fuzz/fuzz_*.c targets"; exit 0; fi; \
	for src in $$targets; do \
	    name=$$(basename "$$src" .c); \
	    out=$(FUZZ_DIR)/corpus/$$name; art=$(FUZZ_DIR)/artifacts/$$name; \
	    mkdir -p "$$out" "$$art"; \
	    seeds=; if [ -d "fuzz/corpus/$$name" ]; then seeds="fuzz/corpus/$$name"; fi; \
	    dict=; if [ -f "fuzz/$$name.dict" ]; then dict="-dict=fuzz/$$name.dict"; fi; \
	    echo "fuzz: $$name for $(FUZZ_SECONDS)s (seeds: $${seeds:-none})"; \
	    $(ASAN_ENV) $(FUZZ_DIR)/fuzz/$$name -max_total_time=$(FUZZ_SECONDS) -timeout=10 \
	        -rss_limit_mb=4096 -print_final_stats=1 -artifact_prefix="$$art/" $$dict \
	        "$$out" $$seeds; \
	    echo "fuzz: $$name OK"; \
	done

C_FILES = $(shell find src tests fuzz -name '*.[ch]' 2>/dev/null)

bench-parser: build
	cmake --build $(BUILD_DIR) --target parser_bench
	$(BUILD_DIR)/parser_bench

# Randomized whole-exchange test (scripted clients and upstream, faults on both sides) under
# ASan+UBSan with free lists bypassed; configured like test-sanitize so build-asan/ is shared.
STRESS_SECONDS ?= 20
STRESS_ARGS    ?=
.PHONY: stress
stress: setup
	$(call cmake_build,$(ASAN_DIR),-DCMAKE_C_COMPILER=$(CLANG) -DFERRY_WERROR=ON -DFERRY_TESTS=ON -DFERRY_SANITIZE=ON -DFERRY_NO_FREELIST=ON,--target stress_exchange)
	$(ASAN_ENV) $(ASAN_DIR)/tests/stress_exchange --seconds $(STRESS_SECONDS) $(STRESS_ARGS)

format:
	@if [ -n "$(strip $(C_FILES))" ]; then clang-format -i $(C_FILES); fi

format-check:
	@if [ -n "$(strip $(C_FILES))" ]; then clang-format --dry-run -Werror $(C_FILES); fi

clean:
	rm -rf $(BUILD_DIR) $(TEST_DIR) $(ASAN_DIR) $(TSAN_DIR) $(FUZZ_DIR)
