# Usher's build. `make run` starts a server on ./data; `make test` installs the
# pinned tools into ./bin and runs everything CI runs.

BIN := $(CURDIR)/bin
export PATH := $(BIN):$(PATH)

# Pinned tool versions, installed from the Go module proxy into ./bin.
TOOLS := \
	github.com/bufbuild/buf/cmd/buf@v1.75.0 \
	google.golang.org/protobuf/cmd/protoc-gen-go@v1.36.12 \
	google.golang.org/grpc/cmd/protoc-gen-go-grpc@v1.6.1 \
	github.com/planetscale/vtprotobuf/cmd/protoc-gen-go-vtproto@v0.6.0 \
	github.com/fullstorydev/grpcurl/cmd/grpcurl@v1.9.3

.PHONY: run build image test scenarios manifests lint release-api generate check-generated tools bench fuzz clean

run: build
	$(BIN)/usher serve

# What `usher version` reports, set at link time since the Go tool stamps
# nothing in a git worktree, with -buildvcs=false or in an image build
# (.git stays out of its context). VERSION is the tag at HEAD, if any;
# `make image VERSION=v1.2.3` for a release.
VERSION ?= $(shell git describe --tags --exact-match --dirty 2>/dev/null)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null)
COMMIT_TIME ?= $(shell TZ=UTC git log -1 --date=format-local:%Y-%m-%dT%H:%M:%SZ --format=%cd 2>/dev/null)
MODIFIED ?= $(shell git rev-parse HEAD >/dev/null 2>&1 && { test -z "$$(git status --porcelain 2>/dev/null)" && echo false || echo true; })
LDFLAGS := -X main.version=$(VERSION) -X main.commit=$(COMMIT) -X main.commitTime=$(COMMIT_TIME) -X main.modified=$(MODIFIED)

build:
	go build -ldflags '$(LDFLAGS)' -o $(BIN)/usher ./cmd/usher

# The container image (deploy/Containerfile), with podman or else buildah;
# CONTAINER_TOOL=docker for Docker's builder, IMAGE_FLAGS for more of the
# builder's flags (--platform, --pull=never, ...).
CONTAINER_TOOL ?= $(shell command -v podman || command -v buildah)
IMAGE ?= usher:$(or $(VERSION),dev)
IMAGE_FLAGS ?=
image:
	@test -n "$(CONTAINER_TOOL)" || { echo 'make image: neither podman nor buildah is installed (apt-get install podman, or CONTAINER_TOOL=docker)'; exit 1; }
	$(CONTAINER_TOOL) build $(IMAGE_FLAGS) -f deploy/Containerfile -t $(IMAGE) --build-arg VERSION=$(VERSION) \
		--build-arg COMMIT=$(COMMIT) --build-arg COMMIT_TIME=$(COMMIT_TIME) --build-arg MODIFIED=$(MODIFIED) .

# Under -race the delegation invariant's property test builds 200 worlds;
# its full 2,000 run again without the race detector (1-2 minutes on 2 cores),
# and so do the tests of actors holding long assignable_roles lists, which
# skip under -race (worlds of millions of listed names; 5 s without it).
# cmd/usher's tests start real servers from one binary they build, and take
# about 2 minutes under -race on 2 busy cores; the whole run about 12 on a
# fresh clone with Go's module and build caches warm, 25 with both cold. The
# timeout leaves room for a slower machine than go test's default of 10
# minutes per package would. The fuzz targets run for 2,000 inputs each,
# but FuzzDelegationInvariant, whose 2,000 worlds the line before builds
# (as its inputs, two minutes more); make fuzz runs it.
test: tools lint check-generated scenarios manifests
	go test -race -count=1 -timeout 30m ./...
	go test -count=1 -run '^TestDelegationInvariant$$|$(LONG_LISTS)' ./authz/
	$(MAKE) fuzz FUZZTIME=2000x FUZZ="$(filter-out authz:FuzzDelegationInvariant,$(FUZZ))"

# authz's tests that skip under -race, for their size.
LONG_LISTS = ^(TestAnActorWithLongAssignableListsIsJudged|TestTheRolesAnActorWithLongAssignableListsMayAssignAreListed|TestAMuteOfAHolderOfLongAssignableListsIsJudged|TestAGrantOfWhatTheActorHoldsDoesNotReadWhatItMayAssign|TestAnActorWithDeepLongAssignableListsIsJudgedByWhatChanges|TestAnActorWriteReadsABoundedNumberOfListedNames)$$

# Every shipped policy's scenario file, replayed from its document.
scenarios: build
	$(BIN)/usher policy test policy/scenarios/*.yaml

# The Kubernetes manifests, parsed into the API types by a module of their
# own (deploy/kubernetes/go.mod, keeping k8s.io/api out of Usher's) and
# checked against the binary just built.
manifests: build
	cd deploy/kubernetes && go vet ./... && USHER_BIN=$(BIN)/usher go test -count=1 ./...

# The protos must be linted, formatted, and wire- and source-compatible with
# the API as last released: RELEASE_API, a buf image committed beside them
# (no tags or history needed, so a shallow clone checks it too).
RELEASE_API := api/release.binpb

lint: tools
	buf lint
	buf format -d --exit-code
	buf breaking --against $(RELEASE_API)
	go vet ./...
	@test -z "$$(gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'))" || { gofmt -l $$(git ls-files '*.go' | grep -v '^gen/'); echo 'gofmt: the files above need formatting'; exit 1; }

# Cutting a release: make the released API the one later changes must keep
# to, and commit it with the release. Comments are left out of the image, so
# that editing one never changes it.
release-api: lint
	buf build --exclude-source-info -o $(RELEASE_API)

generate: tools
	buf generate

# gen/ must be exactly what buf generate makes of proto/.
check-generated: tools
	@rm -rf $(BIN)/gen-check && buf generate --output $(BIN)/gen-check
	@diff -r gen $(BIN)/gen-check/gen || { echo 'gen/ is stale: run make generate and commit it'; exit 1; }
	@rm -rf $(BIN)/gen-check

tools: $(BIN)/.tools $(BIN)/etcd

$(BIN)/.tools: Makefile
	@mkdir -p $(BIN)
	@for t in $(TOOLS); do echo "go install $$t"; GOBIN=$(BIN) go install $$t || exit 1; done
	@touch $@

# The etcd server that internal/etcdtest runs, at the version tools/etcd/go.mod
# pins: its module cannot be go installed at a version (it has replace
# directives), and building it from a module of its own keeps etcd's server
# out of Usher's go.mod.
$(BIN)/etcd: tools/etcd/go.mod tools/etcd/go.sum
	cd tools/etcd && go build -o $@ go.etcd.io/etcd/server/v3

# Go benchmarks, then a load run on loopback: Usher against a bare gRPC
# server (the floor), interleaved; BENCH_DURATION sets each phase's time.
bench: build tools
	go test -run '^$$' -bench . -benchmem ./authz/ ./admission/ ./internal/codec/ ./storage/... ./server/
	bench/run.sh

# FUZZTIME is a duration or a count of inputs (2000x). make test gives a
# count: a duration ends with a race in Go's fuzz coordinator that can fail
# a target with "context deadline exceeded" on a busy machine.
FUZZTIME ?= 60s
FUZZ := authz:FuzzValidateResource authz:FuzzValidateSubject authz:FuzzValidatePermission \
	authz:FuzzDelegationInvariant server:FuzzParseCallers server:FuzzCheckRequest server:FuzzDistinguishedName \
	server:FuzzParseEnvoyConfig server:FuzzEnvoyCheck policy:FuzzParsePolicy scenario:FuzzParseScenario \
	storage:FuzzParseManifest storage/bolt:FuzzOpenCorrupted internal/codec:FuzzUnmarshal
fuzz:
	@for t in $(FUZZ); do \
		go test -run '^$$' -fuzz "^$${t#*:}$$" -fuzztime $(FUZZTIME) ./$${t%%:*}/ || exit 1; done

clean:
	rm -rf $(BIN) data
