#!/usr/bin/env bash
# Checks template.yaml the way a deployment would meet it:
#   1. cfn-lint (errors, warnings and informational findings all fail),
#   2. sam validate --lint,
#   3. sam build without Docker (functions and the emailrouter layer, arm64 wheels included).
# Sets up what is missing: the SAM CLI gets its own venv (.venv-sam; it pins older boto3,
# pydantic and click than the project). Idempotent; exits non-zero on any finding.
#
#   scripts/check-template.sh            all three steps
#   SKIP_SAM_BUILD=1 scripts/check-template.sh   lint and validate only
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

SAM_CLI_VERSION="1.170.0"
SAM_VENV="$ROOT/.venv-sam"
# Build output stays out of .aws-sam/build (what `sam deploy` uses) and out of git.
CHECK_DIR="$ROOT/.aws-sam/check"
export SAM_CLI_TELEMETRY=0
# sam validate needs a region, never credentials.
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-eu-west-1}"

log() { printf '==> %s\n' "$*" >&2; }
fail() { printf 'check-template: %s\n' "$*" >&2; exit 1; }

# A Python the SAM CLI supports (3.9-3.12): the default python3 if it is one, else pyenv's.
sam_python() {
  local candidate
  local candidates=(python3)
  if command -v pyenv >/dev/null 2>&1; then
    local root
    root="$(pyenv root)"
    for candidate in "$root"/versions/3.12*/bin/python3 "$root"/versions/3.11*/bin/python3; do
      candidates+=("$candidate")
    done
  fi
  candidates+=(python3.12 python3.11 /usr/bin/python3.12 /usr/bin/python3.11)
  for candidate in "${candidates[@]}"; do
    if command -v "$candidate" >/dev/null 2>&1 \
      && "$candidate" -c 'import sys, venv; assert (3, 9) <= sys.version_info[:2] <= (3, 12)' 2>/dev/null; then
      command -v "$candidate"
      return 0
    fi
  done
  return 1
}

ensure_sam() {
  if [ -x "$SAM_VENV/bin/sam" ] && "$SAM_VENV/bin/sam" --version 2>/dev/null | grep -q "$SAM_CLI_VERSION"; then
    return 0
  fi
  local python
  python="$(sam_python)" || fail "no Python 3.9-3.12 for the SAM CLI (try: pyenv install 3.12)"
  log "installing aws-sam-cli==$SAM_CLI_VERSION into .venv-sam (with $python)"
  rm -rf "$SAM_VENV"
  "$python" -m venv "$SAM_VENV"
  "$SAM_VENV/bin/python" -m pip install -qq "aws-sam-cli==$SAM_CLI_VERSION"
  "$SAM_VENV/bin/sam" --version >/dev/null || fail "the SAM CLI did not install"
}

# cfn-lint: the project's pinned one, else the one the SAM CLI brought.
cfn_lint() {
  if [ -x "$ROOT/.venv/bin/cfn-lint" ]; then
    echo "$ROOT/.venv/bin/cfn-lint"
  else
    echo "$SAM_VENV/bin/cfn-lint"
  fi
}

# `sam build` without a container runs the build with a python3.13 on PATH (the runtime).
python313_on_path() {
  local python313 shim_dir="$CHECK_DIR/bin"
  python313="$("$ROOT/scripts/find-python.sh")" || exit 1
  mkdir -p "$shim_dir"
  ln -sf "$python313" "$shim_dir/python3.13"
  echo "$shim_dir"
}

timed() {
  local label="$1"
  shift
  local start elapsed_ms
  start=$(date +%s%N)
  "$@"
  elapsed_ms=$((($(date +%s%N) - start) / 1000000))
  log "$label: ok ($((elapsed_ms / 1000)).$((elapsed_ms % 1000 / 100)) s)"
}

run_cfn_lint() {
  # --include-checks I: informational findings (such as I3011, stateful resources without an
  # explicit DeletionPolicy) count too. Exit status is non-zero on any finding.
  "$(cfn_lint)" --include-checks I -- template.yaml
}

run_sam_validate() {
  local output
  if ! output="$("$SAM_VENV/bin/sam" validate --lint --template-file template.yaml 2>&1)"; then
    printf '%s\n' "$output" >&2
    return 1
  fi
  printf '%s\n' "$output"
  if grep -qiE '^\[\[|warning' <<<"$output"; then
    fail "sam validate --lint reported findings"
  fi
}

run_sam_build() {
  local shim_dir output status=0
  shim_dir="$(python313_on_path)"
  output="$(PATH="$shim_dir:$PATH" "$SAM_VENV/bin/sam" build \
    --template-file template.yaml \
    --build-dir "$CHECK_DIR/build" \
    --cache-dir "$CHECK_DIR/cache" \
    --cached --parallel 2>&1)" || status=$?
  printf '%s\n' "$output" | grep -v 'Running PythonPipBuilder' || true
  [ "$status" -eq 0 ] || fail "sam build failed"
  grep -q 'Build Succeeded' <<<"$output" || fail "sam build did not report success"
  # pip's notices about the machine's optional local indexes are not about this template.
  if grep -E '^(WARNING|Warning|Error)' <<<"$output" | grep -v "Location 'file://" | grep -q .; then
    fail "sam build printed warnings"
  fi
}

ensure_sam
timed "cfn-lint" run_cfn_lint
timed "sam validate --lint" run_sam_validate
if [ "${SKIP_SAM_BUILD:-0}" != "1" ]; then
  timed "sam build" run_sam_build
fi
log "template checks passed"
