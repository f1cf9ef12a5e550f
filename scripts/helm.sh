#!/usr/bin/env bash
# Helm for the chart at deploy/helm/switchboard, and the offline checks CI runs
# on it (there is no Kubernetes cluster and no container engine here).
#
#   scripts/helm.sh install   build helm from the Go module proxy (cached)
#   scripts/helm.sh check     lint, render and validate the chart; run tests/helm.rs
#
# helm is built with `go install` because the Go module proxy is where this
# machine can fetch it from; the build takes minutes on 2 cores, so the binary
# is cached under ~/.cache/switchboard/bin and rebuilt only when the module
# version Go recorded in it is not HELM_VERSION.
#
# `check`, step by step (each prints its time; the last line sums up):
#   lint            helm lint --strict, default values and ci/production-values.yaml
#   render          helm template: default, production (install), production (upgrade)
#   kubernetes      every rendered object against the Kubernetes OpenAPI schemas of the
#                   chart's oldest and the newest Kubernetes the validator bundles,
#                   strictly (an unknown field fails); PyPI kubernetes-validate, offline
#   servicemonitor  the one CRD object (the validator only warns on CRDs) against
#                   ci/servicemonitor.schema.json
#   checkov         policy scan of each render: zero failed checks; every skip is a
#                   checkov.io/skip annotation in the chart that carries its reason
#   cargo test      tests/helm.rs over the same renders, with helm required
#
#   SB_HELM_VERSION   helm module version to build (default v4.3.2)
#   SB_CACHE_DIR      cache root (default ~/.cache/switchboard)
set -euo pipefail

HELM_VERSION="${SB_HELM_VERSION:-v4.3.2}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
CACHE="${SB_CACHE_DIR:-$HOME/.cache/switchboard}"
HELM="$CACHE/bin/helm"
VENV="$CACHE/venv"
REQUIREMENTS="$ROOT/scripts/helm-requirements.txt"
CHART="$ROOT/deploy/helm/switchboard"
OUT="${SB_WORK_DIR:-$ROOT/.work}/helm"
# The chart's kubeVersion floor and the newest Kubernetes kubernetes-validate bundles.
K8S_VERSIONS=(1.25.0 1.37.0)
# Rendered as a release would be installed: a namespace of its own (checkov
# rightly fails objects in `default`).
NAMESPACE=switchboard

# The version a cached binary was built from, as Go recorded it (`helm
# version` only says v4.3), so a stale or hand-copied binary is never taken
# for ours.
cached_version() {
    [ -x "$HELM" ] || return 0
    go version -m "$HELM" 2>/dev/null | awk '$1 == "mod" && $2 == "helm.sh/helm/v4" { print $3 }'
}

install_helm() {
    if [ "$(cached_version)" = "$HELM_VERSION" ]; then
        echo "helm $HELM_VERSION cached at $HELM"
        return
    fi
    echo "building helm $HELM_VERSION into $CACHE/bin (Go module proxy; takes minutes)"
    mkdir -p "$CACHE/bin"
    # -mod=mod: resolve from the module's own go.mod, never a vendor directory.
    GOFLAGS=-mod=mod GOBIN="$CACHE/bin" go install "helm.sh/helm/v4/cmd/helm@$HELM_VERSION"
    if [ "$(cached_version)" != "$HELM_VERSION" ]; then
        echo "the helm build did not produce $HELM_VERSION" >&2
        return 1
    fi
    echo "helm $HELM_VERSION built at $HELM"
}

# kubernetes-validate and checkov, pinned in scripts/helm-requirements.txt;
# the venv is rebuilt when that file or the Python version changes.
setup_venv() {
    local want
    want="$(sha256sum "$REQUIREMENTS" | cut -d' ' -f1) $(python3 -c 'import sys; print(sys.version.split()[0])')"
    if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.requirements-hash" 2>/dev/null)" = "$want" ]; then
        echo "venv $VENV is up to date"
        return
    fi
    echo "creating $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV" &&
        "$VENV/bin/python" -m pip install --disable-pip-version-check -q -r "$REQUIREMENTS" &&
        echo "$want" > "$VENV/.requirements-hash"
}

# helm writes an INFO line each time it follows the dashboard symlink; the
# rest of its stderr is kept.
quiet_symlink() {
    grep -v 'found symbolic link in path' >&2 || true
}

lint() {
    "$HELM" lint --strict "$CHART" 2> >(quiet_symlink) &&
        "$HELM" lint --strict "$CHART" -f "$CHART/ci/production-values.yaml" 2> >(quiet_symlink)
}

render() {
    rm -rf "$OUT" && mkdir -p "$OUT" || return 1
    local prod=(-f "$CHART/ci/production-values.yaml")
    "$HELM" template sb "$CHART" -n "$NAMESPACE" > "$OUT/default.yaml" 2> >(quiet_symlink) &&
        "$HELM" template sb "$CHART" -n "$NAMESPACE" "${prod[@]}" > "$OUT/production.yaml" 2> >(quiet_symlink) &&
        "$HELM" template sb "$CHART" -n "$NAMESPACE" "${prod[@]}" --is-upgrade > "$OUT/production-upgrade.yaml" 2> >(quiet_symlink) ||
        return 1
    for f in "$OUT"/*.yaml; do
        echo "$(basename "$f"): $(grep -c '^kind: ' "$f") objects"
    done
}

# Strict: an unknown or misplaced field fails. The only warning allowed is
# the missing schema of the ServiceMonitor CRD, checked by the next step.
validate_kubernetes() {
    local version log
    log="$OUT/kubernetes-validate.log"
    : > "$log"
    for version in "${K8S_VERSIONS[@]}"; do
        if ! "$VENV/bin/kubernetes-validate" --strict --quiet -k "$version" "$OUT"/*.yaml >> "$log" 2>&1; then
            cat "$log"
            return 1
        fi
    done
    if grep -v "Couldn't find schema for kind ServiceMonitor" "$log" | grep -q .; then
        cat "$log"
        echo "unexpected kubernetes-validate output" >&2
        return 1
    fi
    echo "kubernetes-validate $("$VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("kubernetes-validate"))')," \
        "Kubernetes ${K8S_VERSIONS[*]}, strict: every object valid" \
        "($(grep -c . "$log") ServiceMonitor warning(s), checked next)"
}

validate_servicemonitor() {
    "$VENV/bin/python" - "$CHART/ci/servicemonitor.schema.json" "$OUT"/*.yaml <<'PY'
import json, sys
import jsonschema, yaml

schema = json.load(open(sys.argv[1]))
checked = 0
for path in sys.argv[2:]:
    for doc in yaml.safe_load_all(open(path)):
        if doc and doc.get("kind") == "ServiceMonitor":
            errors = sorted(jsonschema.Draft7Validator(schema).iter_errors(doc), key=str)
            for e in errors:
                print(f"{path}: ServiceMonitor {'/'.join(map(str, e.path))}: {e.message}")
            if errors:
                sys.exit(1)
            checked += 1
if checked == 0:
    sys.exit("no ServiceMonitor rendered: ci/production-values.yaml should enable one")
print(f"{checked} ServiceMonitor(s) match ci/servicemonitor.schema.json")
PY
}

scan_checkov() {
    local f status=0
    for f in "$OUT"/*.yaml; do
        # --skip-download: offline, and no policies or suppressions from any platform.
        "$VENV/bin/checkov" --framework kubernetes -f "$f" -o json --skip-download \
            > "$OUT/$(basename "$f" .yaml).checkov.json" 2> "$OUT/checkov.log" || true
        "$VENV/bin/python" - "$OUT/$(basename "$f" .yaml).checkov.json" "$(basename "$f")" <<'PY' || status=1
import json, sys

report = json.load(open(sys.argv[1]))
report = report[0] if isinstance(report, list) else report
summary, results = report["summary"], report["results"]
print(f"{sys.argv[2]}: checkov {summary['checkov_version']}: {summary['passed']} passed, "
      f"{summary['failed']} failed, {summary['skipped']} skipped, {summary['parsing_errors']} parsing errors")
for check in results.get("failed_checks", []):
    print(f"  FAILED {check['check_id']} {check['resource']}: {check['check_name']}")
reasons = {}
for check in results.get("skipped_checks", []):
    reason = check["check_result"].get("suppress_comment", "")
    reasons.setdefault((check["check_id"], reason), []).append(check["resource"].split(".")[2])
unjustified = False
for (check_id, reason), resources in sorted(reasons.items()):
    print(f"  skipped {check_id} on {', '.join(sorted(set(resources)))}: {reason}")
    unjustified |= reason in ("", "No comment provided")
if unjustified:
    print("  a skip without a reason: write it in the chart's checkov.io/skip annotation")
sys.exit(1 if summary["failed"] or summary["parsing_errors"] or unjustified else 0)
PY
    done
    return $status
}

rust_test() {
    export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/switchboard/target}"
    # Required: with helm installed a skip would hide a broken chart.
    (cd "$ROOT" && SB_HELM="$HELM" SB_HELM_REQUIRED=1 cargo test --test helm)
}

PASSED=()
CHECK_START=$SECONDS
step() {
    local name=$1 start=$SECONDS
    shift
    echo "--- $name"
    if "$@"; then
        echo "--- $name: ok in $((SECONDS - start))s"
        PASSED+=("$name")
    else
        echo "--- $name: FAILED after $((SECONDS - start))s"
        local IFS=,
        echo "helm check: FAILED at $name after $((SECONDS - CHECK_START))s (ok before it: ${PASSED[*]:-nothing})"
        exit 1
    fi
}

check() {
    CHECK_START=$SECONDS
    step "helm $HELM_VERSION" install_helm
    step "python tools" setup_venv
    step "lint" lint
    step "render" render
    step "kubernetes schemas" validate_kubernetes
    step "servicemonitor" validate_servicemonitor
    step "checkov" scan_checkov
    step "cargo test --test helm" rust_test
    local IFS=,
    echo "helm check: all ${#PASSED[@]} steps ok in $((SECONDS - CHECK_START))s: ${PASSED[*]}"
}

case "${1:-}" in
    install) install_helm ;;
    check) check ;;
    *)
        echo "usage: $0 install|check" >&2
        exit 64
        ;;
esac
