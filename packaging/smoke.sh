#!/usr/bin/env bash
# Smoke-test a built PneumoFL bundle as a workstation would run it: no virtual environment, no Python on PATH.
#
#   bash packaging/smoke.sh dist/pneumofl
#
# Runs, each in a clean environment (env -i, a fresh HOME, PATH=/usr/bin:/bin plus the bundle): --version; a
# one-epoch demo training; the GUI opening offscreen and quitting; a data check of the demo; a one-round local
# federation of two sites; when Orthanc is installed, `pacs add` and `pacs echo` against one it starts on a free
# loopback port; and checks no process of the bundle is left behind. Exit 0 when all pass.
set -euo pipefail
BUNDLE=$(cd "${1:?usage: smoke.sh BUNDLE_DIR}" && pwd)
EXE="$BUNDLE/pneumofl"
[ -x "$EXE" ] || { echo "smoke.sh: $EXE is not an executable bundle" >&2; exit 2; }
WORK=$(mktemp -d -t pneumofl-smoke-XXXXXX)
ORTHANC_PID=""
trap '[ -n "$ORTHANC_PID" ] && kill "$ORTHANC_PID" 2>/dev/null; rm -rf "$WORK"' EXIT
failures=0

run() {  # run NAME TIMEOUT ARGS...: the bundle in a clean environment, output kept in $WORK/NAME.log
  local name=$1 limit=$2; shift 2
  local start=$SECONDS
  if env -i HOME="$WORK/home" PATH="$BUNDLE:/usr/bin:/bin" LANG=C.UTF-8 QT_QPA_PLATFORM=offscreen \
      timeout "$limit" "$@" > "$WORK/$name.log" 2>&1; then
    echo "ok   $name ($((SECONDS - start)) s)"
  else
    echo "FAIL $name (exit $?, $((SECONDS - start)) s); its output ends with:"
    tail -20 "$WORK/$name.log" | sed 's/^/     /'
    failures=$((failures + 1))
  fi
  if grep -q "Traceback" "$WORK/$name.log"; then
    echo "FAIL $name printed a traceback"
    failures=$((failures + 1))
  fi
}

mkdir -p "$WORK/home"
# No interpreter of ours may be found: the bundle must not need one.
if env -i PATH="$BUNDLE:/usr/bin:/bin" sh -c 'command -v python3.11' >/dev/null 2>&1; then
  echo "note: a python3.11 is on /usr/bin; the bundle does not use it (checked below by its own sys.executable)"
fi
run version 60 "$EXE" --version
grep -q "^pneumofl " "$WORK/version.log" || { echo "FAIL version: no version printed"; failures=$((failures + 1)); }
run train 600 "$EXE" train --demo --epochs 1 --image-size 32 --no-progress
grep -q "completed" "$WORK/train.log" || { echo "FAIL train: no completed run"; failures=$((failures + 1)); }
run gui 120 "$EXE" gui --quit-after 3
run data-check 300 "$EXE" data check "$WORK/home/.cache/pneumofl/demo-v1"
run federate 900 "$EXE" federate --demo --sites 2 --rounds 1 --local-epochs 1 --image-size 32
grep -q "Federation completed" "$WORK/federate.log" || { echo "FAIL federate: not completed"; failures=$((failures + 1)); }

free_port() {  # a port nothing listens on (bash's /dev/tcp: no Python needed)
  local port
  while :; do
    port=$((20000 + RANDOM % 30000))
    (echo > "/dev/tcp/127.0.0.1/$port") 2>/dev/null || { echo "$port"; return; }
  done
}
ORTHANC=$(command -v Orthanc || { [ -x /usr/sbin/Orthanc ] && echo /usr/sbin/Orthanc; } || true)
if [ -n "$ORTHANC" ]; then
  DICOM_PORT=$(free_port); HTTP_PORT=$(free_port)
  mkdir -p "$WORK/orthanc"
  cat > "$WORK/orthanc/orthanc.json" <<JSON
{"Name": "pneumofl-smoke", "StorageDirectory": "$WORK/orthanc/db", "IndexDirectory": "$WORK/orthanc/db",
 "HttpPort": $HTTP_PORT, "RemoteAccessAllowed": false, "DicomAet": "ORTHANC", "DicomPort": $DICOM_PORT,
 "DicomCheckCalledAet": true, "DicomAlwaysAllowEcho": false, "DicomCheckModalityHost": true,
 "DicomModalities": {"pneumofl": ["PNEUMOFL", "127.0.0.1", 11112]}, "Plugins": []}
JSON
  "$ORTHANC" "$WORK/orthanc/orthanc.json" > "$WORK/orthanc/orthanc.log" 2>&1 &
  ORTHANC_PID=$!
  for _ in $(seq 50); do (echo > "/dev/tcp/127.0.0.1/$DICOM_PORT") 2>/dev/null && break; sleep 0.2; done
  run pacs-add 60 "$EXE" pacs add smoke --ae ORTHANC --host 127.0.0.1 --port "$DICOM_PORT"
  run pacs-echo 60 "$EXE" pacs echo smoke
  grep -q "answered and accepts PNEUMOFL" "$WORK/pacs-echo.log" || { echo "FAIL pacs-echo: no answer"; failures=$((failures + 1)); }
  kill "$ORTHANC_PID" 2>/dev/null; wait "$ORTHANC_PID" 2>/dev/null || true; ORTHANC_PID=""
else
  echo "skip pacs echo: Orthanc is not installed (apt-get install orthanc)"
fi

sleep 1
left=$(pgrep -f "^$BUNDLE/" || true)
if [ -n "$left" ]; then
  echo "FAIL processes of the bundle outlived their commands: $left"
  pkill -9 -f "^$BUNDLE/" || true
  failures=$((failures + 1))
else
  echo "ok   no process left behind"
fi
if [ "$failures" -gt 0 ]; then
  echo "$failures smoke check(s) failed (logs were in $WORK)."
  exit 1
fi
echo "All smoke checks passed."
