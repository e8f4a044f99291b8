#!/usr/bin/env bash
# test.sh is `make test`: it starts the real services (unless they already
# run), requires them, checks formatting and vet, runs the whole suite with
# -race, then runs every fuzz target for FUZZTIME. Services it started are
# stopped on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."

FUZZTIME="${FUZZTIME:-3s}"
start=$(date +%s)
started=0
if ! deploy/dev/deps.sh status >/dev/null 2>&1; then
	deploy/dev/deps.sh up
	started=1
fi
cleanup() { if [ "$started" = 1 ]; then deploy/dev/deps.sh down; fi; }
trap cleanup EXIT
echo "test: services ready after $(($(date +%s) - start))s"

export CAPSTREAM_TEST_REQUIRE_DEPS=1
export CAPSTREAM_DEV_ENV="$(deploy/dev/deps.sh env)"

out=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go' -not -path './deploy/dev/tools/*'))
if [ -n "$out" ]; then
	echo "gofmt needed:"
	echo "$out"
	exit 1
fi
go vet ./...

go test -race -count=1 -timeout 40m ./...

echo "test: fuzzing each target for $FUZZTIME"
for pkg in $(go list ./...); do
	for target in $(go test -list '^Fuzz' "$pkg" | grep '^Fuzz' || true); do
		go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" >/tmp/capstream-fuzz.log 2>&1 || {
			cat /tmp/capstream-fuzz.log
			echo "test: fuzz $pkg $target failed"
			exit 1
		}
		echo "fuzz ok   $pkg $target ($FUZZTIME)"
	done
done
echo "test: done in $(($(date +%s) - start))s"
