#!/usr/bin/env bash
# Runs every test in one node:test run, fast first: unit tests, integration tests over real unix
# sockets (no root needed), then end-to-end tests against a real dockerd, loop devices and mounts
# (root; they install their Debian packages and start and stop their own servers).
# Usage: scripts/test.sh [all|unit|e2e]
set -euo pipefail
cd "$(dirname "$0")/.."
mode=${1:-all}
node scripts/ensure.mjs
files=()
if [ "$mode" = all ] || [ "$mode" = unit ]; then
  mapfile -t unit < <(find dist/src -name '*.test.js' | sort)
  files+=("${unit[@]}")
  mapfile -t integ < <(find dist/test/integration -name '*.test.js' 2>/dev/null | sort)
  files+=("${integ[@]}")
fi
if [ "$mode" = all ] || [ "$mode" = e2e ]; then
  bash scripts/install-test-deps.sh
  mapfile -t e2e < <(find dist/test/e2e -name '*.test.js' 2>/dev/null | sort)
  files+=("${e2e[@]}")
fi
exec node --test --test-concurrency=1 "${files[@]}"
