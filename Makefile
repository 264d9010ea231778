# Thin wrapper over CMake, like redis's: make | make run | make test | make bench | make install | make deb
BUILD ?= build
PREFIX ?= /usr/local
ARGS ?=
CMAKE_FLAGS ?=

.PHONY: all deps test-deps run test unit e2e ha bench bench-ha fuzz asan tsan warnings fresh clean install install-files deb

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

# The e2e suite runs in PYTEST_JOBS processes (python3-pytest-xdist): its tests mostly wait on
# servers, so three processes on two cores take half the time of one (docs/testing.md);
# PYTEST_JOBS=0 runs it in this process. Without xdist installed (make e2e before make test-deps)
# it runs in one process.
PYTEST_JOBS ?= 3
PYTEST = SECKILLD=$(CURDIR)/$(BUILD)/seckilld /usr/bin/python3 -m pytest -q \
	$$(/usr/bin/python3 -c 'import xdist' 2>/dev/null && echo "-n $(PYTEST_JOBS)")

test: test-deps all
	cd $(BUILD) && ctest --output-on-failure
	$(PYTEST) tests/e2e $(PYTEST_ARGS)

unit: all
	cd $(BUILD) && ctest --output-on-failure

e2e: all
	$(PYTEST) tests/e2e $(PYTEST_ARGS)

# Redis high availability (tests/e2e/test_ha.py: a master, a replica, three redis-sentinel):
# every failover case HA_RUNS times (`make test` runs each once). About 90 s.
HA_RUNS ?= 3
ha: test-deps all
	SK_HA_RUNS=$(HA_RUNS) $(PYTEST) tests/e2e/test_ha.py $(PYTEST_ARGS)

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
# FUZZ_SECONDS, FUZZ_JOBS at a time (default: one per core), by scripts/fuzz.sh (or only
# FUZZ_TARGET: make fuzz FUZZ_TARGET=fuzz_url FUZZ_SECONDS=600). A crash, a failed oracle, a leak or
# an input slower than 10 s fails. Logs: build-fuzz/logs/; new inputs: build-fuzz/corpus/;
# tests/fuzz/corpus/<target> holds the chosen seeds (copy an input worth keeping there by hand).
FUZZ_TARGETS = fuzz_body fuzz_head fuzz_url fuzz_config fuzz_redis fuzz_rebuild fuzz_writers fuzz_jwt
FUZZ_TARGET ?= $(FUZZ_TARGETS)
FUZZ_SECONDS ?= 60
FUZZ_ARGS ?=
fuzz:
	cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DSK_FUZZ=ON -DSK_SANITIZE=address,undefined
	$(MAKE) -C build-fuzz -j$$(nproc) $(FUZZ_TARGET)
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_ARGS="$(FUZZ_ARGS)" bash scripts/fuzz.sh $(FUZZ_TARGET)

bench: deps all
	bash bench/run.sh

# What --redis-min-replicas costs and how long a failover takes (bench/ha.sh; BENCHMARKS.md).
bench-ha: test-deps all
	bash bench/ha.sh

# make install [PREFIX=/usr/local] [DESTDIR=]: the binary, the systemd unit (its paths made from
# PREFIX), the man page, the docs and the example alert rules. The config and the logrotate file
# are conffiles: one that exists is never overwritten; when it differs from the new one, the new
# one goes beside it as FILE.new (as dpkg's conffile handling would), to be merged by hand.
SYSCONFDIR ?= /etc
UNITDIR ?= $(PREFIX)/lib/systemd/system
DOCDIR ?= $(PREFIX)/share/doc/seckill
MANDIR ?= $(PREFIX)/share/man

install: all install-files

install-files:
	install -D -m 0755 $(BUILD)/seckilld $(DESTDIR)$(PREFIX)/bin/seckilld
	install -d $(DESTDIR)$(UNITDIR)
	sed -e 's|/usr/local/bin/|$(PREFIX)/bin/|g' -e 's|/usr/local/share/doc/seckill/|$(DOCDIR)/|g' \
	  -e 's|/etc/seckill/|$(SYSCONFDIR)/seckill/|g' packaging/seckilld.service > $(DESTDIR)$(UNITDIR)/seckilld.service
	chmod 0644 $(DESTDIR)$(UNITDIR)/seckilld.service
	@set -e; for pair in packaging/seckilld.conf:seckill/seckilld.conf packaging/seckilld.logrotate:logrotate.d/seckilld; do \
	  src=$${pair%%:*}; dst=$(DESTDIR)$(SYSCONFDIR)/$${pair#*:}; \
	  if [ ! -e "$$dst" ]; then install -D -m 0644 "$$src" "$$dst"; \
	  elif cmp -s "$$src" "$$dst"; then :; \
	  else install -m 0644 "$$src" "$$dst.new"; echo "install: kept $$dst (yours); the new default is $$dst.new"; fi; \
	done
	install -D -m 0644 docs/seckilld.8 $(DESTDIR)$(MANDIR)/man8/seckilld.8
	install -D -m 0644 README.md $(DESTDIR)$(DOCDIR)/README.md
	install -D -m 0644 docs/API.md $(DESTDIR)$(DOCDIR)/API.md
	install -D -m 0644 docs/operations.md $(DESTDIR)$(DOCDIR)/operations.md
	install -D -m 0644 docs/openapi.yaml $(DESTDIR)$(DOCDIR)/openapi.yaml
	install -D -m 0644 packaging/seckilld-alerts.yml $(DESTDIR)$(DOCDIR)/examples/seckilld-alerts.yml

# make deb: the Debian package (debian/, debhelper), built from a copy of the tree in
# $(BUILD)/deb/src so that nothing lands beside the checkout; the .deb is left in $(BUILD)/deb/.
deb:
	rm -rf $(BUILD)/deb && mkdir -p $(BUILD)/deb/src
	tar -c --exclude='./build*' --exclude=./.git --exclude='*.db' --exclude='*.db-*' --exclude=__pycache__ \
	  --exclude=.pytest_cache --exclude=./bench/out . | tar -x -C $(BUILD)/deb/src
	cd $(BUILD)/deb/src && DEB_BUILD_OPTIONS="nocheck parallel=$$(nproc) $(DEB_BUILD_OPTIONS)" \
	  dpkg-buildpackage -b -uc -us --no-sign
	ls $(BUILD)/deb/*.deb

clean:
	rm -rf build build-asan build-tsan build-fuzz build-fresh build-gcc-O3 build-clang-O3
