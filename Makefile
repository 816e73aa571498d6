# Thin wrappers: install dependencies, configure, build, then run. See README.md.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure build test demo bench clean

all: build

deps:
	./.ci/install-deps.sh

configure: deps
	cmake -S . -B $(BUILD) -G Ninja -DTRIPLINE_WERROR=ON $(CMAKE_FLAGS)

build: configure
	cmake --build $(BUILD) -j $(JOBS)

# Every test: unit tests and the integration tests that start real processes on loopback.
test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --timeout 900

# The end-to-end demo: a local EC2 endpoint, a collector and an agent on loopback; one file change
# isolates the instance. Exits 0 only if the instance really was isolated.
demo: build
	/usr/bin/python3 tests/integration/tripline_e2e.py --bin-dir $(BUILD) --demo

# Benchmarks (tests/bench): each prints its figures next to the target or peer it is held to.
bench: configure
	cmake -S . -B $(BUILD) -DTRIPLINE_BUILD_BENCH=ON
	cmake --build $(BUILD) -j $(JOBS) --target bench

clean:
	rm -rf $(BUILD)
