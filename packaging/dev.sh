#!/usr/bin/env bash
# One command to set up a fresh checkout and then either launch the app or run the whole gate.
#   bash packaging/dev.sh run [ARGS...]   set up .venv, then start pneumofl (GUI on the demo data by default)
#   bash packaging/dev.sh test [PYTEST ARGS...]   set up .venv, then lint + import contract + every test
#   bash packaging/dev.sh test --fast [ARGS...]   the same, without the tests that start a federation, a browser or a
#                                                 CLI subprocess (marker `full`) or train for long (marker `slow`)
#   bash packaging/dev.sh setup           only set up .venv
# The window needs Qt's X11 libraries (Debian: libxcb-cursor0 libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0
# libxcb-keysyms1 libxcb-randr0 libxcb-render-util0 libxcb-shape0 libxcb-xkb1 libegl1 libgl1 libfontconfig1
# libdbus-1-3); pneumofl names the missing ones before it opens a window (desktop/system_libraries.py).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VENV="$ROOT/.venv"
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null 2>&1 || PY=python3

setup() {
  if [ ! -x "$VENV/bin/python" ]; then
    echo "Creating $VENV with $($PY --version)..."
    "$PY" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --upgrade pip
  fi
  # Reinstall only when the dependency list changed: a no-op pip resolve of torch costs ~20 s.
  local stamp="$VENV/.pneumofl-deps" want
  want=$(sha256sum pyproject.toml | cut -d' ' -f1)
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "Installing PneumoFL and its dependencies into $VENV (torch is large; the first time takes a few minutes)..."
    "$VENV/bin/python" -m pip install --quiet -e ".[dev]"
    echo "$want" > "$stamp"
  fi
}

gate() {
  export QT_QPA_PLATFORM=${QT_QPA_PLATFORM:-offscreen}
  export FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
  echo "== ruff"; "$VENV/bin/ruff" check .
  echo "== import contract"; "$VENV/bin/lint-imports" --no-cache
  # Two pytest-xdist workers by default: every test that runs a Flower federation is in one group (tests/conftest.py),
  # run in turn on one worker (two federations at once on 2 cores miss their round timeouts), started first; the
  # other worker starts with the long single tests, then takes the rest (12-14 minutes here in all).
  # PNEUMOFL_TEST_WORKERS=0 runs everything in one process.
  local workers=() lane=()
  [ "${PNEUMOFL_TEST_WORKERS:-2}" -gt 0 ] && workers=(-n "${PNEUMOFL_TEST_WORKERS:-2}" --dist loadgroup --no-loadscope-reorder)
  if [ "${1:-}" = "--fast" ]; then
    shift
    lane=(-m "not full and not slow")
  fi
  echo "== tests"; "$VENV/bin/pytest" "${workers[@]}" "${lane[@]}" "$@"
}

cmd=${1:-run}
shift || true
case "$cmd" in
  setup) setup ;;
  run) setup; exec "$VENV/bin/pneumofl" "$@" ;;
  test) setup; gate "$@" ;;
  *) echo "usage: bash packaging/dev.sh run|test|setup [ARGS...]" >&2; exit 2 ;;
esac
