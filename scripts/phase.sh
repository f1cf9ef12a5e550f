# Sourced by the scripts that run in CI: `phase NAME CMD...` runs CMD between
# a `::: NAME` line and a `::: NAME took Ns` line, so every log shows where
# the time went.
phase() {
    local name=$1
    shift
    local start=$SECONDS
    echo "::: $name"
    "$@"
    echo "::: $name took $((SECONDS - start))s"
}
