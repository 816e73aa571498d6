# Thin wrappers: install dependencies, configure, build, then run. See README.md.
BUILD ?= build
JOBS ?= $(shell nproc)
CMAKE_FLAGS ?=

.PHONY: all deps configure build test demo bench clean package

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

# Debian packages (tripline-agent, tripline-collector) and the SSM Distributor package (zips and
# manifest.json), built in their own tree with Debian's hardening flags (dpkg-buildflags with
# hardening=+all: fortify, stack protector, relro, bind now), then checked with lintian.
# Output: $(PKG_BUILD)/packages/{debs,ssm}. See docs/operations.md.
PKG_BUILD ?= build-package
BUILDFLAGS = DEB_BUILD_MAINT_OPTIONS=hardening=+all dpkg-buildflags --get
package: deps
	cmake -S . -B $(PKG_BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DTRIPLINE_WERROR=ON \
	  -DTRIPLINE_BUILD_TESTS=OFF \
	  -DCMAKE_C_FLAGS="$$($(BUILDFLAGS) CFLAGS) $$($(BUILDFLAGS) CPPFLAGS)" \
	  -DCMAKE_CXX_FLAGS="$$($(BUILDFLAGS) CXXFLAGS) $$($(BUILDFLAGS) CPPFLAGS)" \
	  -DCMAKE_EXE_LINKER_FLAGS="$$($(BUILDFLAGS) LDFLAGS)" $(CMAKE_FLAGS)
	cmake --build $(PKG_BUILD) -j $(JOBS)
	/usr/bin/python3 packaging/build_packages.py --build-dir $(PKG_BUILD) --out $(PKG_BUILD)/packages
	lintian --fail-on error,warning --display-info --tag-display-limit 0 $(PKG_BUILD)/packages/debs/*.deb

# Benchmarks against their peers (figures only, never pass/fail). fim_scan compares with AIDE, so
# this installs Debian's `aide` package when it is missing (as root).
bench: build
	@command -v aide >/dev/null 2>&1 || { echo "bench: installing aide (fim_scan's peer)"; \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends aide >/dev/null; }
	cmake --build $(BUILD) --target bench

clean:
	rm -rf $(BUILD) $(PKG_BUILD)
