#!/usr/bin/env bash
# Debian's Chromium, for the browser tests (Playwright drives it through
# playwright-core; Playwright's own browser download is not used).
#
#   scripts/chromium.sh install   install the Debian package if missing
#   scripts/chromium.sh path      print the browser's path
set -euo pipefail

BROWSER=/usr/bin/chromium

as_root() {
    if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi
}

case "${1:-}" in
    install)
        if [ -x "$BROWSER" ]; then exit 0; fi
        echo "installing Chromium from Debian packages"
        as_root apt-get update -qq
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
        "$BROWSER" --version
        ;;
    path) echo "$BROWSER" ;;
    *) echo "usage: $0 install|path" >&2; exit 64 ;;
esac
