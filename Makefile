# Thin wrapper over CMake, like redis's: make | make run | make test | make bench | make install
BUILD ?= build
PREFIX ?= /usr/local
ARGS ?=
CMAKE_FLAGS ?=

.PHONY: all deps test-deps run test unit e2e ha bench bench-ha fuzz asan tsan warnings fresh clean install

all: $(BUILD)/Makefile
	@$(MAKE) --no-print-directory -C $(BUILD) -j$$(nproc)

$(BUILD)/Makefile:
	@command -v cmake >/dev/null || bash scripts/deps.sh
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

deps:
	@SK_DEPS_TEST=0 bash scripts/deps.sh

test-deps:
	@bash scripts/deps.sh

run: deps all
	./$(BUILD)/seckilld $(ARGS)

test: test-deps all
	cd $(BUILD) && ctest --output-on-failure
	SECKILLD=$(CURDIR)/$(BUILD)/seckilld /usr/bin/python3 -m pytest -q tests/e2e $(PYTEST_ARGS)

unit: all
	cd $(BUILD) && ctest --output-on-failure

e2e: all
	SECKILLD=$(CURDIR)/$(BUILD)/seckilld /usr/bin/python3 -m pytest -q tests/e2e $(PYTEST_ARGS)

# Redis high availability (tests/e2e/test_ha.py: a master, a replica, three redis-sentinel):
# every failover case HA_RUNS times (`make test` runs each once). About 90 s.
HA_RUNS ?= 3
ha: test-deps all
	SK_HA_RUNS=$(HA_RUNS) SECKILLD=$(CURDIR)/$(BUILD)/seckilld /usr/bin/python3 -m pytest -q tests/e2e/test_ha.py $(PYTEST_ARGS)

asan:
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	  $(MAKE) BUILD=build-asan CMAKE_FLAGS="-DCMAKE_C_COMPILER=clang -DSK_SANITIZE=address,undefined" test

# The whole suite under ThreadSanitizer (clang): the workers, the committer and the Redis
# connections share sales, counters and queues; TSan sees a race the tests only happen to run into.
tsan:
	TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 suppressions=$(CURDIR)/tests/tsan.supp" \
	  $(MAKE) BUILD=build-tsan CMAKE_FLAGS="-DCMAKE_C_COMPILER=clang -DSK_SANITIZE=thread" test

# Warnings are errors at every optimisation level and with both compilers: -O3 inlines more, and
# gcc's flow analysis then sees paths it does not see at -O2 (a build, no tests).
warnings:
	cmake -S . -B build-gcc-O3 -DCMAKE_C_COMPILER=gcc -DCMAKE_BUILD_TYPE=Release
	$(MAKE) -C build-gcc-O3 -j$$(nproc)
	cmake -S . -B build-clang-O3 -DCMAKE_C_COMPILER=clang -DCMAKE_BUILD_TYPE=Release
	$(MAKE) -C build-clang-O3 -j$$(nproc)

# make test (nothing skipped) and a make run smoke test on a freshly bootstrapped Debian 12 root,
# from a clone of the current commit: scripts/fresh.sh, docs/testing.md. Needs root (or sudo).
fresh:
	bash scripts/fresh.sh

# The libFuzzer targets (tests/fuzz/, one per input surface), built once, then each run for
# FUZZ_SECONDS (or only FUZZ_TARGET: make fuzz FUZZ_TARGET=fuzz_url FUZZ_SECONDS=600). A crash, a
# failed oracle, a leak or an input slower than 10 s fails. New inputs go to build-fuzz/corpus/;
# tests/fuzz/corpus/<target> holds the chosen seeds (copy an input worth keeping there by hand).
FUZZ_TARGETS = fuzz_body fuzz_head fuzz_url fuzz_config fuzz_redis fuzz_rebuild fuzz_writers
FUZZ_TARGET ?= $(FUZZ_TARGETS)
FUZZ_SECONDS ?= 60
FUZZ_ARGS ?=
fuzz:
	cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DSK_FUZZ=ON -DSK_SANITIZE=address,undefined
	$(MAKE) -C build-fuzz -j$$(nproc) $(FUZZ_TARGET)
	@set -e; for t in $(FUZZ_TARGET); do \
	  mkdir -p build-fuzz/corpus/$$t; \
	  dict=; if [ -f tests/fuzz/$$t.dict ]; then dict=-dict=tests/fuzz/$$t.dict; fi; \
	  echo "== $$t: $(FUZZ_SECONDS) s"; \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp UBSAN_OPTIONS=print_stacktrace=1 \
	    ./build-fuzz/tests/$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -print_final_stats=1 \
	    $$dict $(FUZZ_ARGS) build-fuzz/corpus/$$t tests/fuzz/corpus/$$t; \
	done

bench: deps all
	bash bench/run.sh

# What --redis-min-replicas costs and how long a failover takes (bench/ha.sh; BENCHMARKS.md).
bench-ha: test-deps all
	bash bench/ha.sh

install: all
	install -D -m 0755 $(BUILD)/seckilld $(DESTDIR)$(PREFIX)/bin/seckilld
	install -D -m 0644 packaging/seckilld.service $(DESTDIR)$(PREFIX)/lib/systemd/system/seckilld.service
	install -D -m 0644 packaging/seckilld.conf $(DESTDIR)/etc/seckill/seckilld.conf
	install -D -m 0644 packaging/seckilld.logrotate $(DESTDIR)/etc/logrotate.d/seckilld
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/seckill/README.md
	install -D -m 0644 docs/API.md $(DESTDIR)$(PREFIX)/share/doc/seckill/API.md

clean:
	rm -rf build build-asan build-tsan build-fuzz build-fresh build-gcc-O3 build-clang-O3
