#!/usr/bin/env bash
# Installs the system programs that the tests (or the benchmark) use, where they are missing and we
# can (root on Debian/Ubuntu). In CI a missing program is an error, never a skipped test.
set -euo pipefail
what=${1:-test}
case "$what" in
  test)  need=(redis-server:redis-server redis-cli:redis-tools curl:curl chromium:chromium) ;;
  bench) need=(nginx:nginx wrk:wrk curl:curl) ;;
  *) echo "usage: $0 test|bench" >&2; exit 2 ;;
esac
missing=()
for pair in "${need[@]}"; do
  cmd=${pair%%:*}; pkg=${pair#*:}
  command -v "$cmd" >/dev/null 2>&1 || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing: ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "missing system packages: ${missing[*]} (install them, e.g. apt-get install ${missing[*]})" >&2
  [ "${CI:-}" = true ] && exit 1
fi
