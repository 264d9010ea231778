# Thin wrapper over CMake, like redis's: make | make run | make test | make bench | make install
BUILD ?= build
PREFIX ?= /usr/local
ARGS ?=
CMAKE_FLAGS ?=

.PHONY: all deps test-deps run test unit e2e bench fuzz asan warnings fresh clean install

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

asan:
	LSAN_OPTIONS=suppressions=$(CURDIR)/tests/lsan.supp \
	  $(MAKE) BUILD=build-asan CMAKE_FLAGS="-DCMAKE_C_COMPILER=clang -DSK_SANITIZE=address,undefined" test

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

fuzz:
	cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DSK_FUZZ=ON -DSK_SANITIZE=address,undefined
	$(MAKE) -C build-fuzz -j$$(nproc) fuzz_body
	mkdir -p build-fuzz/corpus   # new inputs go there; tests/fuzz/corpus holds the chosen seeds
	./build-fuzz/tests/fuzz_body -max_total_time=$${FUZZ_SECONDS:-60} -dict=tests/fuzz/fuzz_body.dict \
	  build-fuzz/corpus tests/fuzz/corpus

bench: deps all
	bash bench/run.sh

install: all
	install -D -m 0755 $(BUILD)/seckilld $(DESTDIR)$(PREFIX)/bin/seckilld
	install -D -m 0644 packaging/seckilld.service $(DESTDIR)$(PREFIX)/lib/systemd/system/seckilld.service
	install -D -m 0644 packaging/seckilld.conf $(DESTDIR)/etc/seckill/seckilld.conf
	install -D -m 0644 packaging/seckilld.logrotate $(DESTDIR)/etc/logrotate.d/seckilld
	install -D -m 0644 README.md $(DESTDIR)$(PREFIX)/share/doc/seckill/README.md
	install -D -m 0644 docs/API.md $(DESTDIR)$(PREFIX)/share/doc/seckill/API.md

clean:
	rm -rf build build-asan build-fuzz build-fresh
