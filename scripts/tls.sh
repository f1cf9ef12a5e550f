#!/usr/bin/env bash
# A certificate authority of the project's own and one server certificate
# it signs, for the TLS listeners of the local Kafka and PostgreSQL (the
# real-cluster suite connects to them as to managed services: verifying the
# server's certificate and host name against this CA).
#
#   scripts/tls.sh make   create them once under .work/tls (idempotent); prints the directory
#   scripts/tls.sh dir    print the directory
#
# Files: ca.crt (what clients trust), server.crt + server.key (PKCS#8, no
# passphrase), server.pem (key and certificate in one file, Kafka's PEM
# keystore). The server certificate names localhost and 127.0.0.1.
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
DIR="${SB_WORK_DIR:-$ROOT/.work}/tls"

make_certs() {
    if [ -f "$DIR/ca.crt" ] && [ -f "$DIR/server.crt" ] && [ -f "$DIR/server.key" ] && [ -f "$DIR/server.pem" ]; then
        echo "$DIR"
        return
    fi
    mkdir -p "$DIR"
    # Keys readable by their owner only, from the start; the temporary
    # directory (with the CA's key) goes whatever happens.
    umask 077
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=Switchboard test CA" \
        -keyout "$tmp/ca.key" -out "$tmp/ca.crt" 2>/dev/null
    openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
        -keyout "$tmp/server.key" -out "$tmp/server.csr" 2>/dev/null
    printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' > "$tmp/ext.cnf"
    openssl x509 -req -in "$tmp/server.csr" -CA "$tmp/ca.crt" -CAkey "$tmp/ca.key" -CAcreateserial \
        -days 3650 -extfile "$tmp/ext.cnf" -out "$tmp/server.crt" 2>/dev/null
    openssl pkcs8 -topk8 -nocrypt -in "$tmp/server.key" -out "$tmp/server.pk8"
    cat "$tmp/server.pk8" "$tmp/server.crt" > "$tmp/server.pem"
    cp "$tmp/server.pk8" "$DIR/server.key"
    cp "$tmp/server.pem" "$DIR/"
    # Certificates are public; the key files stay the owner's only.
    cp "$tmp/ca.crt" "$tmp/server.crt" "$DIR/"
    chmod 644 "$DIR/ca.crt" "$DIR/server.crt"
    echo "$DIR"
}

case "${1:-}" in
    make) make_certs ;;
    dir) echo "$DIR" ;;
    *) echo "usage: $0 make|dir" >&2; exit 64 ;;
esac
