# rsync-ssl-shim build and test entry points.
#   make            build ./rsync-ssl-shim
#   make test       everything: gofmt, vet, unit tests with -race, integration tests
#   make demo       a throwaway CA, a module served through real socket activation, pulled with rsync-ssl
#   make deps       install the Debian packages the tests use (as root), or name them

GO      ?= go
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
BIN     := rsync-ssl-shim
LDFLAGS := -s -w -X main.version=$(VERSION)

# Debian packages the tests drive: the real programs, never stand-ins.
TEST_DEBS := rsync openssl stunnel4 socat xinetd systemd iproute2 procps ca-certificates

.PHONY: all build test unit integration lint deps demo clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(LDFLAGS)' -o $(BIN) .

deps:
	@missing=""; for p in $(TEST_DEBS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" = 0 ]; then \
	  echo "installing:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing >/dev/null; \
	else \
	  echo "missing Debian packages:$$missing (run 'make deps' as root, or apt-get install them)"; exit 1; \
	fi
	$(GO) mod download

lint:
	@out=$$(gofmt -l $$(git ls-files '*.go' 2>/dev/null || find . -name '*.go')); \
	  if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi
	$(GO) vet ./...

unit:
	$(GO) test -race -count=1 $$($(GO) list ./... | grep -v /tests)

integration:
	$(GO) test -race -count=1 -timeout 45m ./tests/...

test: deps lint unit integration

demo: build
	./tests/demo.sh ./$(BIN)

clean:
	rm -f $(BIN)
