#!/usr/bin/env bash
# Sourced by the other scripts with the lock they need: `source scripts/python.sh requirements.lock` (the
# runtime: program, pack, Lambda layer; what the plan needs) or `requirements-dev.lock` (the runtime plus
# what the tests and linters need). Sets PY_VERSION (from .python-version, the Lambda runtime's Python)
# and VENV, a virtualenv on that Python with that lock installed (hash-checked).
# A .venv on another Python is left alone (it may be shared); a .venv-py<version> is used instead.
case "${1:-}" in
  requirements.lock|requirements-dev.lock) PY_LOCK="$1" ;;
  *) echo "usage: source scripts/python.sh requirements.lock|requirements-dev.lock" >&2; return 2 ;;
esac
PY_VERSION="$(tr -d '[:space:]' < .python-version)"
find_python() {
  local c
  for c in "${PYTHON:-}" "python${PY_VERSION}" "$(command -v pyenv >/dev/null 2>&1 && pyenv root)/versions/${PY_VERSION}"*/bin/python3 \
           /root/.pyenv/versions/"${PY_VERSION}"*/bin/python3 /usr/local/bin/python"${PY_VERSION}" /usr/bin/python"${PY_VERSION}"; do
    [ -n "$c" ] && [ -x "$(command -v "$c" 2>/dev/null || echo "$c")" ] || continue
    if "$c" -c "import sys; sys.exit(0 if '%d.%d' % sys.version_info[:2] == '${PY_VERSION}' else 1)" 2>/dev/null; then
      echo "$c"; return 0
    fi
  done
  echo "no Python ${PY_VERSION} found (the Lambda runtime's version, from .python-version); install it or set PYTHON=/path/to/python${PY_VERSION}" >&2
  return 1
}
venv_version() { "$1/bin/python" -c "import sys; print('%d.%d' % sys.version_info[:2])" 2>/dev/null; }
VENV=.venv
if [ -x .venv/bin/python ] && [ "$(venv_version .venv)" != "$PY_VERSION" ]; then
  VENV=".venv-py${PY_VERSION}"
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$(find_python)" -m venv "$VENV"
fi
"$VENV/bin/python" -m pip install --quiet --disable-pip-version-check --require-hashes -r "$PY_LOCK"
