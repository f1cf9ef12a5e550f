#!/usr/bin/env bash
# A minimal OpenTelemetry Collector for the tracing tests: it receives OTLP over
# HTTP on loopback and writes every span it gets to a file, one JSON line per
# export request.
#
#   scripts/otelcol.sh build                    build once (cached), print the binary's path
#   scripts/otelcol.sh path                     print the binary's path; exit 1 if not built
#   scripts/otelcol.sh run PORT OUTPUT_FILE     OTLP/HTTP on 127.0.0.1:PORT, spans to OUTPUT_FILE
#
# No prebuilt collector can be downloaded here, so the binary is compiled from
# the Go module proxy: a hand-written main (what the collector builder would
# generate) with only the OTLP receiver and the file exporter, at exact pinned
# versions. No processor: none is needed for a pipeline, and the file exporter
# writes each request as it arrives. The build runs at the lowest priority on
# one core, so that it does not starve a cargo build beside it (a few minutes).
# The binary is cached under ${SB_CACHE_DIR:-~/.cache/switchboard}/otelcol-VERSION.
set -euo pipefail

# The collector's core modules come in two release trains, beta (v0.x) and
# stable (v1.x), and contrib follows beta; the three must be from one release.
# v0.161.0 is the newest file exporter known to build with the Go on these
# machines (later ones failed or were not tried). go mod tidy fills in the rest
# by minimal version selection, so the same pins always give the same go.sum.
OTELCOL_VERSION=0.161.0
OTELCOL_STABLE_VERSION=1.67.0
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
WORK="${SB_WORK_DIR:-$ROOT/.work}/otelcol"
DIR="${SB_CACHE_DIR:-$HOME/.cache/switchboard}/otelcol-$OTELCOL_VERSION"
BIN="$DIR/otelcol-sb"

write_sources() {
    local src="$1"
    cat > "$src/go.mod" <<MOD
module switchboard/otelcol-sb

go 1.26.0

require (
	github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter v$OTELCOL_VERSION
	go.opentelemetry.io/collector/confmap/provider/envprovider v$OTELCOL_STABLE_VERSION
	go.opentelemetry.io/collector/confmap/provider/fileprovider v$OTELCOL_STABLE_VERSION
	go.opentelemetry.io/collector/confmap/provider/yamlprovider v$OTELCOL_STABLE_VERSION
	go.opentelemetry.io/collector/otelcol v$OTELCOL_VERSION
	go.opentelemetry.io/collector/receiver/otlpreceiver v$OTELCOL_VERSION
	go.opentelemetry.io/collector/service v$OTELCOL_VERSION
)
MOD
    cat > "$src/main.go" <<GO
// Program otelcol-sb is an OpenTelemetry Collector with only the OTLP receiver
// and the file exporter, for Switchboard's tracing tests.
package main

import (
	"os"

	"github.com/open-telemetry/opentelemetry-collector-contrib/exporter/fileexporter"
	"go.opentelemetry.io/collector/component"
	"go.opentelemetry.io/collector/confmap"
	"go.opentelemetry.io/collector/confmap/provider/envprovider"
	"go.opentelemetry.io/collector/confmap/provider/fileprovider"
	"go.opentelemetry.io/collector/confmap/provider/yamlprovider"
	"go.opentelemetry.io/collector/connector"
	"go.opentelemetry.io/collector/exporter"
	"go.opentelemetry.io/collector/extension"
	"go.opentelemetry.io/collector/otelcol"
	"go.opentelemetry.io/collector/processor"
	"go.opentelemetry.io/collector/receiver"
	"go.opentelemetry.io/collector/receiver/otlpreceiver"
	"go.opentelemetry.io/collector/service/telemetry/otelconftelemetry"
)

func components() (otelcol.Factories, error) {
	var err error
	f := otelcol.Factories{Telemetry: otelconftelemetry.NewFactory()}
	if f.Extensions, err = otelcol.MakeFactoryMap[extension.Factory](); err != nil {
		return otelcol.Factories{}, err
	}
	if f.Receivers, err = otelcol.MakeFactoryMap[receiver.Factory](otlpreceiver.NewFactory()); err != nil {
		return otelcol.Factories{}, err
	}
	if f.Processors, err = otelcol.MakeFactoryMap[processor.Factory](); err != nil {
		return otelcol.Factories{}, err
	}
	if f.Exporters, err = otelcol.MakeFactoryMap[exporter.Factory](fileexporter.NewFactory()); err != nil {
		return otelcol.Factories{}, err
	}
	if f.Connectors, err = otelcol.MakeFactoryMap[connector.Factory](); err != nil {
		return otelcol.Factories{}, err
	}
	return f, nil
}

func main() {
	set := otelcol.CollectorSettings{
		BuildInfo: component.BuildInfo{
			Command:     "otelcol-sb",
			Description: "OTLP receiver and file exporter only, for Switchboard's tracing tests",
			Version:     "$OTELCOL_VERSION",
		},
		Factories: components,
		ConfigProviderSettings: otelcol.ConfigProviderSettings{
			ResolverSettings: confmap.ResolverSettings{
				ProviderFactories: []confmap.ProviderFactory{
					envprovider.NewFactory(),
					fileprovider.NewFactory(),
					yamlprovider.NewFactory(),
				},
			},
		},
	}
	// cobra has already printed the error.
	if err := otelcol.NewCommand(set).Execute(); err != nil {
		os.Exit(1)
	}
}
GO
}

build() {
    if [ -x "$BIN" ]; then echo "$BIN"; return; fi
    command -v go >/dev/null || { echo "go is not installed" >&2; exit 1; }
    echo "building OpenTelemetry Collector $OTELCOL_VERSION (OTLP receiver, file exporter) into $DIR" >&2
    local src="$DIR/src"
    rm -rf "$src"
    mkdir -p "$src"
    write_sources "$src"
    local started=$SECONDS
    # GOTOOLCHAIN=local: fail plainly rather than fetch another Go if a module
    # ever asks for a newer one. One package at a time, on one core, niced.
    (
        cd "$src"
        export GOTOOLCHAIN=local GOFLAGS="-p=1 -buildvcs=false -trimpath" GOMAXPROCS=1
        nice -n 19 go mod tidy >&2
        nice -n 19 go build -ldflags="-s -w" -o "$BIN.tmp" .
    )
    mv "$BIN.tmp" "$BIN"
    echo "built $BIN ($(du -h "$BIN" | cut -f1)) in $((SECONDS - started)) s" >&2
    echo "$BIN"
}

run() {
    local port="${1:-}" out="${2:-}"
    if [ -z "$port" ] || [ -z "$out" ]; then echo "usage: $0 run PORT OUTPUT_FILE" >&2; exit 64; fi
    if [ ! -x "$BIN" ]; then echo "collector not built; run $0 build" >&2; exit 1; fi
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
        echo "port 127.0.0.1:$port is taken by another process" >&2
        exit 1
    fi
    out="$(realpath -m "$out")"
    mkdir -p "$WORK"
    local config="$WORK/config-$port.yaml"
    # The collector's own metrics would listen on :8888 and clash between two
    # collectors; it needs none. The file is truncated at start (append: false).
    cat > "$config" <<YAML
receivers:
  otlp:
    protocols:
      http:
        endpoint: 127.0.0.1:$port
exporters:
  file:
    path: $out
    format: json
    create_directory: true
    flush_interval: 100ms
service:
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [file]
YAML
    echo "otelcol $OTELCOL_VERSION: OTLP/HTTP on 127.0.0.1:$port, spans to $out (config $config)" >&2
    exec "$BIN" --config="file:$config"
}

case "${1:-}" in
    build) build ;;
    path) if [ -x "$BIN" ]; then echo "$BIN"; else echo "not built; run $0 build" >&2; exit 1; fi ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 build|path|run PORT OUTPUT_FILE" >&2; exit 64 ;;
esac
