#!/usr/bin/env bash
# Runs every check: system dependencies, formatting, lints, unit and integration tests, and
# the Debian package (built, listed, lintian).
# Integration tests start real ovsdb-server and dbus-daemon processes in temp dirs.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

step() {
    printf '\n==> %s\n' "$*"
    "$@"
}

step scripts/setup-deps.sh

for component in rustfmt clippy; do
    if ! cargo "${component/rustfmt/fmt}" --version >/dev/null 2>&1; then
        echo "test.sh: error: cargo ${component/rustfmt/fmt} not available; run: rustup component add $component" >&2
        exit 1
    fi
done

step cargo fmt --check
step cargo clippy --all-targets -- -D warnings
step cargo test --all-targets
# The .deb from a release build: contents listed, lintian must be clean.
step scripts/package.sh --check

printf '\n==> all checks passed\n'
