# The two commands of the README: `make demo` and `make test`. Each installs
# what is missing (Debian packages, a .venv with the package and its build,
# test and benchmark dependencies) and is a no-op the second time.

PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

APT_PACKAGES := build-essential pkg-config libuv1-dev libcmocka-dev
BUILD_DEPS := "meson-python>=0.15" "meson>=1.1" ninja
SOURCES := $(shell find include lib pymodule -type f -not -name '*.pyc') \
           meson.build meson.options pyproject.toml

APT_STAMP := $(VENV)/.apt-stamp
DEPS_STAMP := $(VENV)/.deps-stamp
INSTALL_STAMP := $(VENV)/.install-stamp

.PHONY: demo test bench test-c test-python test-sanitize setup clean

demo: $(INSTALL_STAMP)
	$(VPY) examples/demo.py

test: test-c test-python

bench: $(INSTALL_STAMP)
	$(VPY) benchmarks/bench.py
	$(VPY) benchmarks/arrays.py

setup: $(INSTALL_STAMP)

# Debian packages: installed only when one is missing.
$(APT_STAMP):
	@bash tools/ensure-system-deps.sh $(PYTHON) $(APT_PACKAGES)
	@mkdir -p $(VENV) && touch $@

$(VENV)/bin/python: | $(APT_STAMP)
	$(PYTHON) -m venv $(VENV)

$(DEPS_STAMP): $(VENV)/bin/python pyproject.toml
	$(VPY) -m pip install --quiet --upgrade pip
	$(VPY) -m pip install --quiet $(BUILD_DEPS)
	touch $@

# The package itself, rebuilt when a source changes.
$(INSTALL_STAMP): $(DEPS_STAMP) $(SOURCES)
	$(VPY) -m pip install --quiet --no-build-isolation ".[test,bench]"
	touch $@

# CMocka tests of lib/, built with -Werror.
test-c: $(DEPS_STAMP)
	@[ -f build/c/build.ninja ] || meson setup build/c -Dpython=false -Dwerror=true
	meson test -C build/c --verbose

test-python: $(INSTALL_STAMP)
	$(VPY) -m pytest -q

# The C tests once more under AddressSanitizer and UndefinedBehaviorSanitizer.
test-sanitize: $(DEPS_STAMP)
	@[ -f build/sanitize/build.ninja ] || meson setup build/sanitize -Dpython=false \
	    -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
	meson test -C build/sanitize --verbose

clean:
	rm -rf build
