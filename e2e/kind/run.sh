#!/usr/bin/env bash
# Meshward on a local kind cluster with Istio, installed with `kubectl apply -k
# istio-manifests/overlays/kind` (the manifests unchanged): the control plane in
# Kubernetes mode, the four filters in a sample app's sidecar (ECDS from the control plane), a
# RateLimitPolicy custom resource applied with kubectl, then checks that the sidecar
# answers 429 with RateLimit/Retry-After and that the policy's status says
# Accepted/Programmed. See README.md beside this file (what it needs, what it proves).
#
# usage: e2e/kind/run.sh [--cleanup] [--skip-build] [--timeout SECONDS]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
CLUSTER=meshward
CONTEXT=kind-$CLUSTER
IMAGE=meshward/control-plane:dev
POLICY=echo-limits
RULE=per-client
CLEANUP=0
BUILD=1
# Upper bound for every single wait (rollouts, conditions, the limit taking effect).
WAIT=180

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//'
    cat <<'EOF'

  --cleanup        delete the kind cluster when the script ends (pass or fail)
  --skip-build     reuse the meshward/control-plane:dev image already built
  --timeout SECS   upper bound for each wait (default 180)
EOF
}

while [ $# -gt 0 ]; do
    case "$1" in
        --cleanup) CLEANUP=1 ;;
        --skip-build) BUILD=0 ;;
        --timeout)
            [ $# -ge 2 ] || { echo "--timeout needs a value" >&2; exit 2; }
            WAIT=$2
            shift
            ;;
        -h | --help) usage; exit 0 ;;
        *) echo "unknown option $1" >&2; usage >&2; exit 2 ;;
    esac
    shift
done

step() { printf '\n==> %s\n' "$*"; }
info() { printf '    %s\n' "$*"; }
fail() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }

k() { kubectl --context "$CONTEXT" "$@"; }

# Runs a command with a time limit when coreutils' timeout is available (kubectl exec
# has no bound of its own).
bounded() {
    local seconds=$1
    shift
    if command -v timeout >/dev/null 2>&1; then
        timeout "$seconds" "$@"
    elif command -v gtimeout >/dev/null 2>&1; then
        gtimeout "$seconds" "$@"
    else
        "$@"
    fi
}

# Polls `$@` every 2 s until it succeeds or WAIT seconds pass.
retry_until() {
    local what=$1
    shift
    local deadline=$((SECONDS + WAIT))
    until "$@"; do
        [ "$SECONDS" -lt "$deadline" ] || fail "$what: not within ${WAIT}s"
        sleep 2
    done
}

# --- prerequisites -------------------------------------------------------------------
step "checking prerequisites"
missing=()
for tool in docker kind kubectl istioctl; do
    if command -v "$tool" >/dev/null 2>&1; then
        info "$tool: $(command -v "$tool")"
    else
        missing+=("$tool")
    fi
done
if [ ${#missing[@]} -gt 0 ]; then
    {
        echo "missing: ${missing[*]}"
        echo "  docker    https://docs.docker.com/engine/install/ (a running Docker engine)"
        echo "  kind      https://kind.sigs.k8s.io/docs/user/quick-start/#installation"
        echo "  kubectl   https://kubernetes.io/docs/tasks/tools/"
        echo "  istioctl  https://istio.io/latest/docs/setup/getting-started/#download"
    } >&2
    exit 2
fi
docker info >/dev/null 2>&1 ||
    fail "docker is installed but its engine is not reachable (is it running, may this user use it?)"

# On failure, show what a person would look at first; with --cleanup, delete the cluster.
on_exit() {
    local status=$?
    if [ "$status" -ne 0 ] && kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
        printf '\n--- diagnostics -------------------------------------------------------\n' >&2
        k get pods -A -o wide --request-timeout=20s >&2 || true
        k -n meshward-system logs deploy/meshward-control-plane --tail=60 --request-timeout=20s >&2 || true
        k -n demo get ratelimitpolicies -o yaml --request-timeout=20s >&2 || true
        k -n demo logs deploy/echo -c istio-proxy --tail=60 --request-timeout=20s >&2 || true
    fi
    if [ "$CLEANUP" -eq 1 ]; then
        step "deleting kind cluster $CLUSTER (--cleanup)"
        kind delete cluster --name "$CLUSTER" || true
    fi
    exit "$status"
}
trap on_exit EXIT

# --- cluster and Istio ---------------------------------------------------------------
step "kind cluster $CLUSTER"
if kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
    info "exists; reusing it"
else
    kind create cluster --name "$CLUSTER" --wait "${WAIT}s"
fi
k cluster-info >/dev/null

step "Istio (istio-manifests/istio/istiooperator.yaml: profile minimal + Meshward's stats inclusion)"
istioctl install -y --context "$CONTEXT" -f "$ROOT/istio-manifests/istio/istiooperator.yaml" --readiness-timeout "${WAIT}s"
k -n istio-system rollout status deploy/istiod --timeout="${WAIT}s"

# --- control plane -------------------------------------------------------------------
if [ "$BUILD" -eq 1 ]; then
    step "building $IMAGE (control plane + wasm modules; the first build takes a while)"
    # The context is the source tree without build output, tools and history (target/
    # alone is gigabytes); the Dockerfile is read from inside it.
    tar -C "$ROOT" -cf - \
        --exclude=./target --exclude=./.venv --exclude=./.tools --exclude=./.git \
        --exclude='./filters/*/fuzz/target' . |
        docker build -t "$IMAGE" -f e2e/kind/Dockerfile -
fi
step "loading $IMAGE into the cluster"
kind load docker-image "$IMAGE" --name "$CLUSTER"

step "Meshward (kubectl apply -k istio-manifests/overlays/kind: CRDs, control plane, EnvoyFilters, demo bootstrap override)"
# The overlay is the install (istio-manifests/base/) plus the :dev image built above and
# the bootstrap override in namespace demo, which must exist first.
k create namespace demo --dry-run=client -o yaml | k apply -f -
k label namespace demo istio-injection=enabled --overwrite
k apply -k "$ROOT/istio-manifests/overlays/kind"
for crd in ratelimitpolicies authpolicies idempotencypolicies tracepolicies runtimetunings; do
    k wait --for=condition=Established "crd/$crd.meshward.io" --timeout="${WAIT}s"
done
# A changed image under the same tag is only picked up by new pods.
if [ "$BUILD" -eq 1 ]; then
    k -n meshward-system rollout restart deploy/meshward-control-plane
fi
k -n meshward-system rollout status deploy/meshward-control-plane --timeout="${WAIT}s"

# --- sample app with the filter ------------------------------------------------------
step "sample app (e2e/kind/sample-app.yaml)"
k apply -f "$ROOT/e2e/kind/sample-app.yaml"
# Restarted so that pods created before the mesh wiring existed pick it up.
k -n demo rollout restart deploy/echo deploy/client
k -n demo rollout status deploy/echo --timeout="${WAIT}s"
k -n demo rollout status deploy/client --timeout="${WAIT}s"
containers=$(k -n demo get pods -l app=echo -o jsonpath='{.items[*].spec.containers[*].name} {.items[*].spec.initContainers[*].name}')
case " $containers " in
    *" istio-proxy "*) info "echo has its sidecar ($containers)" ;;
    *) fail "no istio-proxy in the echo pod ($containers): is injection enabled for namespace demo?" ;;
esac

# --- the policy ----------------------------------------------------------------------
step "RateLimitPolicy $POLICY (istio-manifests/examples/ratelimitpolicy.yaml)"
k apply -f "$ROOT/istio-manifests/examples/ratelimitpolicy.yaml"
k -n demo wait --for=condition=Accepted "ratelimitpolicy/$POLICY" --timeout="${WAIT}s"
limit=$(k -n demo get ratelimitpolicy "$POLICY" \
    -o jsonpath="{.spec.config.rules[?(@.name==\"$RULE\")].limit.requests}")
[ -n "$limit" ] || fail "rule $RULE not found in $POLICY"
info "rule $RULE allows $limit requests per client"

# One request from the client pod: "<status>|<retry-after>|<ratelimit>|<ratelimit-policy>".
request() {
    bounded 30 kubectl --context "$CONTEXT" -n demo exec deploy/client -c curl -- \
        curl -s -o /dev/null --max-time 5 \
        -w '%{http_code}|%header{retry-after}|%header{ratelimit}|%header{ratelimit-policy}\n' \
        http://echo.demo/
}

# The policy sets responseHeaders.onAllowed, so even an allowed response names the rule
# once the sidecar runs the pushed configuration (before that: the pass-through default,
# no such field).
filter_live() {
    local line
    line=$(request 2>/dev/null) || return 1
    case "$line" in
        *"\"$RULE\""*) return 0 ;;
        *) info "not yet: $line"; return 1 ;;
    esac
}
step "waiting for the echo sidecar to enforce the policy"
retry_until "the policy reaching the echo sidecar" filter_live

total=$((limit + 5))
step "sending $total requests from the client pod"
results=$(bounded 120 kubectl --context "$CONTEXT" -n demo exec deploy/client -c curl -- sh -c "
    for i in \$(seq 1 $total); do
        curl -s -o /dev/null --max-time 5 \
            -w '%{http_code}|%header{retry-after}|%header{ratelimit}|%header{ratelimit-policy}\n' \
            http://echo.demo/
    done")
printf '%s\n' "$results" | sed 's/^/    /'
allowed_before_first_429=$(printf '%s\n' "$results" | awk -F'|' '$1 == 429 { exit } $1 == 200 { n++ } END { print n + 0 }')
limited=$(printf '%s\n' "$results" | awk -F'|' '$1 == 429' | wc -l | tr -d ' ')
other=$(printf '%s\n' "$results" | awk -F'|' '$1 != 200 && $1 != 429' | wc -l | tr -d ' ')
[ "$other" -eq 0 ] || fail "$other responses were neither 200 nor 429"
[ "$limited" -gt 0 ] || fail "no 429 in $total requests (limit $limit)"
# The probe above already used some of the budget, so fewer than $limit may pass here.
[ "$allowed_before_first_429" -le "$limit" ] ||
    fail "$allowed_before_first_429 requests passed before the first 429 (limit $limit)"
bad_429=$(printf '%s\n' "$results" | awk -F'|' '$1 == 429 && ($2 == "" || $3 == "" || $4 == "")' | wc -l | tr -d ' ')
[ "$bad_429" -eq 0 ] || fail "$bad_429 of the 429s lack Retry-After, RateLimit or RateLimit-Policy"
info "$limited of $total answered 429, each with Retry-After, RateLimit and RateLimit-Policy"

# --- status --------------------------------------------------------------------------
step "policy status"
k -n demo wait --for=condition=Programmed "ratelimitpolicy/$POLICY" --timeout="${WAIT}s"
k -n demo get ratelimitpolicies
accepted=$(k -n demo get ratelimitpolicy "$POLICY" \
    -o jsonpath='{.status.conditions[?(@.type=="Accepted")].status}')
programmed=$(k -n demo get ratelimitpolicy "$POLICY" \
    -o jsonpath='{.status.conditions[?(@.type=="Programmed")].message}')
[ "$accepted" = "True" ] || fail "Accepted is '$accepted', expected True"
[ -n "$programmed" ] || fail "the Programmed condition has no message"
info "Accepted=True; Programmed: $programmed"

step "PASS: the sidecar enforces the RateLimitPolicy from the control plane, status reported"
