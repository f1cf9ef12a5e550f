#!/usr/bin/env bash
# Installs what the benchmark needs: Redis (Debian package) and the Socket.IO
# server's npm packages (pinned by package-lock.json) for the baseline, and
# the DejaVu font the plots are labelled with.
set -euo pipefail
cd "$(dirname "$0")"
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
[ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || missing+=(fonts-dejavu-core)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]} from Debian packages"
    if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi
if [ ! -d socketio/node_modules ]; then
    (cd socketio && npm ci --no-audit --no-fund --loglevel=error)
fi
