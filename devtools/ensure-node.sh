#!/usr/bin/env bash
# Some integration tests run Node.js programs we did not write (oidc-provider; JupyterHub's
# configurable-http-proxy). Install Node.js and npm with apt-get when they are missing, then
# the locked packages of every devtools/*/ folder with a package-lock.json. Quiet when there
# is nothing to do, so `make test` can call it every time.
set -euo pipefail
cd "$(dirname "$0")/.."

MIN_NODE_MAJOR=20  # the oldest Node.js oidc-provider 9 runs on (it warns below 22)

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
    echo "node and npm are missing: install them (apt-get install nodejs npm)" >&2
    exit 1
  fi
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  echo "installing nodejs and npm for the integration tests"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq nodejs npm >/dev/null
fi

major=$(node -p 'process.versions.node.split(".")[0]')
if [ "$major" -lt "$MIN_NODE_MAJOR" ]; then
  echo "node $(node --version) is too old: the test peers need Node.js $MIN_NODE_MAJOR or later" >&2
  exit 1
fi

for lock in devtools/*/package-lock.json; do
  [ -e "$lock" ] || continue  # no match: the glob stays as written
  dir=$(dirname "$lock")
  # npm ci empties node_modules first, so a stamp inside it never outlives a failed install.
  stamp="$dir/node_modules/.installed-lock-sha256"
  want=$(cat "$dir/package.json" "$lock" | sha256sum | cut -d' ' -f1)
  if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    continue
  fi
  echo "installing the npm packages of $dir"
  (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >/dev/null)
  echo "$want" >"$stamp"
done
