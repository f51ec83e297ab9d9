# One static binary: cgo is needed for the nsenter constructor (exec into a
# sandbox's mount namespace), linked statically against glibc.
GO ?= go
BIN := bin/tether
VERSION ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS := -s -w -X github.com/tether-net/tether/internal/api.Version=$(VERSION) -extldflags "-static"

.PHONY: build test e2e clean
build:
	CGO_ENABLED=1 $(GO) build -trimpath -tags osusergo,netgo -ldflags '$(LDFLAGS)' -o $(BIN) ./cmd/tether

test: build
	$(GO) test ./...

clean:
	rm -rf bin
