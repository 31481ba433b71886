#!/usr/bin/env bash
# System packages the test suite needs beyond Python and the engines (which `make` installs):
#   - Debian's chromium + chromium-driver: the comparison page's browser test;
#   - the Docker Compose v2 client (no engine): `docker compose config` checks docker-compose.yml.
# Idempotent: installs only what is missing, as root or through sudo.
#
#   bash scripts/setup-system.sh        (make test runs it)
set -euo pipefail
cd "$(dirname "$0")/.."

sudo=""
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
        sudo="sudo"
    fi
fi

need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" -ne 0 ] && [ -z "$sudo" ]; then
        echo "setup-system: missing ${need[*]}; install them as root: apt-get install ${need[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update -q && $sudo apt-get install -y -q "${need[@]}"
fi

if ! { docker compose version || docker-compose version; } >/dev/null 2>&1; then
    if [ "$(id -u)" -ne 0 ] && [ -z "$sudo" ]; then
        echo "setup-system: no Docker Compose v2 client; install it as root: bash scripts/install-compose.sh" >&2
        exit 1
    fi
    $sudo bash scripts/install-compose.sh
fi
