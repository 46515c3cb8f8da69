#!/usr/bin/env bash
# What `make test` and `make test-deploy` need beyond the Python packages: Chromium for
# tests/browser, Node.js with npm and the locked npm packages for tests/clients/test_node_sdk.py,
# podman and mmdebstrap for the image tests of tests/deploy. Whatever is missing is installed
# when this machine allows it (Debian's apt-get, as root or with password-less sudo), saying so;
# otherwise one line says what to install, and the suite that needs it fails with that line.
set -uo pipefail
cd "${BASH_SOURCE[0]%/*}/.." || exit 1

say() { echo "test-deps: $*"; }

as_root() {
  if [ "$EUID" = 0 ]; then
    "$@"
  else
    sudo -n "$@"
  fi
}

can_apt() {
  command -v apt-get >/dev/null || return 1
  [ "$EUID" = 0 ] || { command -v sudo >/dev/null && sudo -n true 2>/dev/null; }
}

apt_updated=""
apt_install() {
  if [ -z "$apt_updated" ]; then
    as_root apt-get -o DPkg::Lock::Timeout=600 update -qq || return 1
    apt_updated=1
  fi
  as_root env DEBIAN_FRONTEND=noninteractive \
    apt-get -o DPkg::Lock::Timeout=600 install -y -qq --no-install-recommends "$@"
}

chromium="${GATEWAY_CHROMIUM:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  if [ -z "${GATEWAY_CHROMIUM:-}" ] && can_apt; then
    say "installing Chromium for tests/browser: apt-get install chromium"
    apt_install chromium || say "apt-get could not install chromium; tests/browser will fail"
  else
    say "Chromium is missing ($chromium) and cannot be installed here: install Debian's" \
      "chromium package (or set GATEWAY_CHROMIUM to a Chromium binary); tests/browser will fail"
  fi
fi

if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  if can_apt; then
    say "installing Node.js and npm for tests/clients/test_node_sdk.py: apt-get install nodejs npm"
    apt_install nodejs npm || say "apt-get could not install nodejs npm; the Node SDK test will fail"
  else
    say "Node.js/npm are missing and cannot be installed here: install Node.js 18+ with npm;" \
      "tests/clients/test_node_sdk.py will fail"
  fi
fi

if ! command -v podman >/dev/null || ! command -v mmdebstrap >/dev/null; then
  if can_apt; then
    say "installing podman and mmdebstrap for tests/deploy (the image build): apt-get install" \
      "podman mmdebstrap"
    apt_install podman mmdebstrap || say "apt-get could not install podman mmdebstrap;" \
      "the image tests will fail"
  else
    say "podman/mmdebstrap are missing and cannot be installed here: install Debian's podman" \
      "and mmdebstrap packages; the image tests in tests/deploy will fail"
  fi
fi

node_dir=tests/clients/node
if command -v npm >/dev/null && [ ! -d "$node_dir/node_modules/openai" ]; then
  say "installing the locked npm packages of $node_dir: npm ci"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error) ||
    say "npm ci failed in $node_dir; the Node SDK test will fail"
fi
exit 0
