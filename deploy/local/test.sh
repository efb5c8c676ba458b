#!/usr/bin/env bash
# Run the workspace tests against the local stores: starts what is missing with
# `up.sh --stores-only` (the services are not needed: tests start what they need), exports
# the KEYMETER_* settings and runs `cargo test --workspace --all-targets "$@"`.
# Exits with cargo's exit code.
#
#   deploy/local/test.sh [extra cargo test args, e.g. a test name filter, or -- --nocapture]
set -euo pipefail

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)/lib.sh"

cd "$KM_ROOT"
# cargo test builds the dev profile; tell the tests so unless told otherwise.
: "${KEYMETER_BUILD_PROFILE:=dev}"
export KEYMETER_BUILD_PROFILE

"$KM_LIB_DIR/up.sh" --stores-only

km_settings
km_secrets quiet
km_build_deps
# The limiter's gateway test runs the real nginx (never as a service: it starts its own).
km_need_cmd nginx nginx
command -v cargo >/dev/null || km_die "cargo not found (install Rust with rustup)"

km_log "test: cargo test --workspace --all-targets $*"
exec cargo test --workspace --all-targets "$@"
