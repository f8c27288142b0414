#!/usr/bin/env bash
# One entry point for a newcomer on a fresh Debian machine with Python 3.11:
#   ./dev.sh serve   set up, then serve on the embedded default configuration
#   ./dev.sh test    set up (system packages too), then run the whole test suite
#   ./dev.sh lock    re-resolve requirements.lock after a runtime dependency changed
set -euo pipefail
cd "$(dirname "$0")"

VENV=${VENV:-.venv}
SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"

system_packages() {
  # Debian packages named as arguments, installed only when missing.
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "==> installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

venv_support() {
  # Debian's python3 lacks ensurepip (so venv cannot bootstrap pip) until python3-venv is in.
  if [ ! -x "$VENV/bin/python" ] && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
    system_packages python3-venv
  fi
}

python_env() {
  local extra=$1
  if [ ! -x "$VENV/bin/python" ]; then
    echo "==> creating virtualenv $VENV"
    python3 -m venv "$VENV"
  fi
  echo "==> installing Python packages (requirements.lock, then .[$extra])"
  "$VENV/bin/python" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
  # The locked runtime versions first, so tests run on what the image ships.
  if ! { "$VENV/bin/python" -m pip install -q --require-hashes --no-deps -r requirements.lock \
      && "$VENV/bin/python" -m pip install -q -e ".[$extra]"; } >"$VENV/pip-install.log" 2>&1; then
    cat "$VENV/pip-install.log" >&2
    echo "dev.sh: installing the Python packages failed" >&2
    exit 1
  fi
}

case "${1:-}" in
  serve)
    venv_support
    python_env fast
    if [ -z "${POSTHOG_RECEIVER_WEBHOOK_TOKEN:-}" ]; then
      POSTHOG_RECEIVER_WEBHOOK_TOKEN=$("$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(24))')
      export POSTHOG_RECEIVER_WEBHOOK_TOKEN
      echo "==> POSTHOG_RECEIVER_WEBHOOK_TOKEN was not set; using a fresh one for this run:"
      echo "    $POSTHOG_RECEIVER_WEBHOOK_TOKEN"
    fi
    shift
    exec "$VENV/bin/posthog-receiver" serve "$@"
    ;;
  test)
    # Real Prometheus, Alertmanager and PostgreSQL for the tests; wrk for the benchmark and its
    # smoke test.
    system_packages prometheus prometheus-alertmanager postgresql wrk
    venv_support
    python_env dev
    shift
    echo "==> lint (ruff), types (mypy), layers (import-linter)"
    "$VENV/bin/ruff" check receiver tests bench
    "$VENV/bin/ruff" format --check receiver tests bench
    "$VENV/bin/mypy"
    "$VENV/bin/lint-imports"
    echo "==> tests"
    exec "$VENV/bin/python" -m pytest "$@"
    ;;
  lock)
    # Re-resolve requirements.lock (the image's runtime dependencies) from pyproject.toml,
    # keeping the current pins where they still fit; --upgrade or --upgrade-package NAME moves
    # them. The image is Python 3.11 on Linux; the hashes cover every platform's wheels.
    venv_support
    python_env dev
    shift
    exec "$VENV/bin/uv" pip compile pyproject.toml --python-version 3.11 --python-platform linux \
      --generate-hashes --custom-compile-command "./dev.sh lock" -o requirements.lock "$@"
    ;;
  *)
    echo "usage: ./dev.sh serve [--port P] | ./dev.sh test [pytest args] | ./dev.sh lock [--upgrade]" >&2
    exit 2
    ;;
esac
