#!/usr/bin/env bash
# Installs what the benchmark's baseline needs: Redis (Debian package) and
# the Socket.IO server's npm packages (pinned by package-lock.json).
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v redis-server >/dev/null; then
    echo "installing redis-server from Debian packages"
    if [ "$(id -u)" = 0 ]; then sudo=; else sudo=sudo; fi
    $sudo apt-get update -qq
    $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
fi
if [ ! -d socketio/node_modules ]; then
    (cd socketio && npm ci --no-audit --no-fund --loglevel=error)
fi
