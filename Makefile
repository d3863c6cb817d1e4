# rsync-ssl-shim build and test entry points.
#   make            build ./rsync-ssl-shim
#   make test       everything: lint, unit tests with -race, integration tests
#   make lint       gofmt, go vet, staticcheck (pinned) and the house limits:
#                   no non-test file over 400 lines, no function over 80
#   make cross      the binary for Linux, macOS, FreeBSD and Windows (amd64, arm64)
#                   into dist/: serve is Linux-only, the client commands build everywhere
#   make demo       a throwaway CA, a module served through real socket activation, pulled with rsync-ssl
#   make demo-deps  install only what the demo needs (as root), or name it
#   make deps       install the Debian packages the tests use (as root), or name them; the
#                   daemons among them are left disabled and stopped

GO      ?= go
# The release in the file VERSION, or a development build after it:
# <VERSION>+git<YYYYMMDD>.<hash> (packaging/version.sh says why it sorts).
VERSION ?= $(shell packaging/version.sh)
COMMIT  ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BIN     := rsync-ssl-shim
LDFLAGS := -s -w -X main.version=$(VERSION) -X main.commit=$(COMMIT)

# Debian packages the tests drive: the real programs, never stand-ins.
# build-essential: dpkg-checkbuilddeps (in the package test) refuses to build
# without it, whatever the package's own Build-Depends say.
TEST_DEBS := rsync openssl stunnel4 socat xinetd systemd iproute2 procps ca-certificates \
             nginx-light libnginx-mod-stream build-essential \
             debhelper dpkg-dev lintian debootstrap systemd-container man-db util-linux \
             sslscan openssh-client haproxy \
             qemu-system-x86 busybox-static xz-utils

# What make bench needs beyond the tests.
BENCH_DEBS := openssh-server gnuplot-nox time

# An older rsync for the version matrix, unpacked beside the tests, never
# installed over the system's.
OLD_RSYNC     := 3.2.7-1+deb12u6
OLD_RSYNC_DIR := tests/.cache/rsync-3.2.7

# staticcheck at a pinned version (2026.2.2, which knows go1.26), installed
# through the Go module proxy into GOBIN (or GOPATH/bin).
STATICCHECK_VERSION := v0.8.2
GOBIN_DIR   := $(or $(shell $(GO) env GOBIN),$(shell $(GO) env GOPATH)/bin)
STATICCHECK := $(GOBIN_DIR)/staticcheck

.PHONY: version demo-deps lab-quiet test-ktls tools all build cross test unit integration lint deps bench-deps demo deb matrix fuzz stress robustness bench bench-installed clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) .

# Where rsync users are: the client commands (connect, rsync, check) have no
# Linux-only code; serve answers on other systems that it is Linux-only.
CROSS := linux/amd64 linux/arm64 darwin/amd64 darwin/arm64 freebsd/amd64 freebsd/arm64 windows/amd64 windows/arm64

cross:
	@mkdir -p dist; for p in $(CROSS); do \
	  os=$${p%/*}; arch=$${p#*/}; ext=; [ $$os = windows ] && ext=.exe; \
	  GOOS=$$os GOARCH=$$arch CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o dist/$(BIN)-$$os-$$arch$$ext . || exit 1; \
	  echo "built dist/$(BIN)-$$os-$$arch$$ext"; \
	done
	@# The client packages and their tests, vetted as each system compiles them.
	@for os in darwin freebsd windows; do \
	  GOOS=$$os $(GO) vet ./tlsbridge/client ./tlsbridge/certid ./tlsbridge/tlserr ./tlsbridge/rsyncd || exit 1; \
	done

# What make demo needs, and nothing more: rsync (and its rsync-ssl),
# openssl, systemd-socket-activate, ss, pgrep.
DEMO_DEBS := rsync openssl systemd iproute2 procps

# Daemons the test lab installs, which the tests start by hand on loopback
# ports of their own: make deps installs them with policy-rc.d refusing to
# start anything, and leaves their units disabled and stopped, so that the
# machine serves nothing it did not before (nginx's default site is port 80).
LAB_UNITS := nginx.service haproxy.service xinetd.service stunnel4.service

# install-debs: install the Debian packages named in $$debs that are missing
# (as root; otherwise name them and fail). No service starts while they are
# installed.
define install-debs
missing=""; for p in $$debs; do \
  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
done; \
if [ -n "$$missing" ]; then \
  if [ "$$(id -u)" != 0 ]; then echo "missing Debian packages:$$missing (run 'make $@' as root, or apt-get install them)"; exit 1; fi; \
  echo "installing:$$missing"; \
  own=; if [ ! -e /usr/sbin/policy-rc.d ]; then own=1; printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d; chmod 755 /usr/sbin/policy-rc.d; fi; \
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; rc=$$?; \
  if [ -n "$$own" ]; then rm -f /usr/sbin/policy-rc.d; fi; \
  [ $$rc = 0 ] || exit $$rc; \
fi
endef

demo-deps:
	@debs="$(DEMO_DEBS)"; $(install-debs)

deps:
	@debs="$(TEST_DEBS)"; $(install-debs)
	@$(MAKE) -s lab-quiet
	$(GO) mod download
	@$(MAKE) --no-print-directory tools
	@if [ ! -x $(OLD_RSYNC_DIR)/usr/bin/rsync ]; then \
	  mkdir -p tests/.cache && cd tests/.cache && \
	  { apt-get download rsync=$(OLD_RSYNC) >/dev/null 2>&1 || \
	    { apt-get update -qq && apt-get download rsync=$(OLD_RSYNC); }; } && \
	  dpkg-deb -x rsync_$(OLD_RSYNC)_*.deb rsync-3.2.7 && rm -f rsync_*.deb; \
	fi

# The lab's daemons disabled and stopped (as root), then checked: none
# enabled, nothing on nginx's default ports.
lab-quiet:
	@for u in $(LAB_UNITS); do \
	  [ "$$(id -u)" = 0 ] || break; \
	  st=$$(systemctl is-enabled $$u 2>/dev/null); \
	  case $$st in enabled*) systemctl disable -q $$u 2>/dev/null && echo "make deps: disabled $$u (installed for the tests, which start their own)";; esac; \
	  if systemctl is-active -q $$u 2>/dev/null; then systemctl stop $$u && echo "make deps: stopped $$u"; fi; \
	done; \
	bad=; for u in $(LAB_UNITS); do \
	  case $$(systemctl is-enabled $$u 2>/dev/null) in enabled*) bad="$$bad $$u enabled;";; esac; \
	  if systemctl is-active -q $$u 2>/dev/null; then bad="$$bad $$u running;"; fi; \
	done; \
	if command -v ss >/dev/null && ss -Hltn 'sport = :80 or sport = :443' | grep -q .; then bad="$$bad something listens on port 80 or 443;"; fi; \
	if [ -n "$$bad" ]; then echo "make deps: the test lab is not quiet:$$bad"; exit 1; fi

# The Go tools lint uses, at their pinned versions (no root needed).
tools:
	@$(STATICCHECK) -version 2>/dev/null | grep -qF '($(STATICCHECK_VERSION:v%=%))' || \
	  { echo "installing staticcheck $(STATICCHECK_VERSION) into $(GOBIN_DIR)"; \
	    $(GO) install honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION); }

lint: tools
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...
	$(STATICCHECK) ./...
	$(GO) test -count=1 -run 'TestLayout' ./tests/

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /tests)

integration:
	$(GO) test -race -count=1 -timeout 45m ./tests/...

test: deps lint cross unit integration fuzz

# Each fuzz target for a few seconds; "make stress" runs them for minutes.
fuzz:
	tests/fuzz.sh 5

# The long robustness suite: 200 concurrent sessions, 5,000 sequential
# connections, every fault, and longer fuzzing.
stress:
	STRESS=1 CI=true $(GO) test -count=1 -timeout 60m -run 'TestServeBadInput|TestFault|TestLoad|TestTLSPolicy|TestSecurity' ./tests/
	tests/fuzz.sh 300

# Rerun the long suite and rewrite docs/robustness.md from it.
robustness:
	mkdir -p tests/.cache && FUZZ_REPORT=tests/.cache/fuzz.txt tests/fuzz.sh 60
	STRESS=1 UPDATE_ROBUSTNESS=1 FUZZ_REPORT=tests/.cache/fuzz.txt $(GO) test -count=1 -timeout 60m -run 'TestServeBadInput|TestFault|TestLoad|TestTLSPolicy|TestSecurity' ./tests/

# Rerun the rsync version matrix and rewrite its tables in docs/versions.md.
matrix:
	UPDATE_MATRIX=1 $(GO) test -count=1 -run TestVersionMatrix ./tests/

# The kernel TLS data path in a VM: Debian's own kernel (fetched once into
# tests/.cache/ktls) under qemu's TCG, stock clients, both data paths'
# server CPU; once with serve started by hand (about 3 minutes), once as
# installed from the .deb under systemd on Debian 12 and on Debian 13, each
# on its own kernel (about 3 minutes each, plus a one-time debootstrap).
test-ktls: deps
	CI=true $(GO) test -count=1 -timeout 30m -v -run 'TestKTLS' ./tests/

deb:
	packaging/build-deb.sh . $(VERSION)

# The version "make" and "make deb" give the build.
version:
	@echo $(VERSION)

# Every server and client setup side by side on loopback, data on tmpfs
# (about 15 minutes; not part of make test): writes docs/benchmarks.md, .png
# and .raw. BENCH_QUICK=1 make bench: a smoke run of a few minutes. Then
# tests/bench/syscalls.sh: the bridge's CPU and syscalls per GiB against
# bare Go TLS (BENCH_OLD=BINARY: an older build in the same rounds).
bench: build bench-deps
	./tests/bench/bench.sh ./$(BIN)
	./tests/bench/syscalls.sh ./$(BIN) $(BENCH_OLD)

# The Debian package as installed, in a booted Debian 12 and then Debian 13
# (systemd-nspawn), beside plain rsync.service and stunnel, all in one
# container per release (about 10 minutes each, as root; not part of make
# test): writes an "As installed" section per release in docs/benchmarks.md.
# BENCH_QUICK=1: a smoke run; BENCH_SUITES=trixie: one release.
bench-installed: build
	./tests/bench/installed.sh

# openssh-server is installed without starting; the benchmark starts its own
# sshd. (ssh.service is left as the package set it: it may be how this
# machine is reached.)
bench-deps:
	@debs="$(BENCH_DEBS)"; $(install-debs)

demo: demo-deps build
	./tests/demo.sh ./$(BIN)

clean:
	rm -rf $(BIN) dist
