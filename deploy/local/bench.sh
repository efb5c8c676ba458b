#!/usr/bin/env bash
# Placeholder: keymeter has no benchmark yet. Fails on purpose so nobody mistakes it for one.
set -euo pipefail
echo "no benchmark yet" >&2
exit 1
