#!/usr/bin/env bash
# Build the self-contained PneumoFL bundle (no Python needed where it runs), a .deb and a wheel, then smoke-test
# the bundle as built.
#
#   bash packaging/build.sh [--torch-index URL | --torch-wheel FILE] [--no-deb] [--no-smoke]
#
# Writes dist/pneumofl-VERSION-linux-x86_64.tar.gz (the bundle folder plus install.sh), dist/pneumofl_VERSION_amd64.deb
# and dist/pneumofl-VERSION-py3-none-any.whl. The bundle carries the torch build of the environment it is built in:
# by default the project's .venv (here a CUDA build of torch 2.14.1, so the bundle is several GB). For the
# CPU-only bundle a workstation wants, give the CPU build of torch 2.14.1 and torchvision 0.29.1:
#   bash packaging/build.sh --torch-index https://download.pytorch.org/whl/cpu
#   bash packaging/build.sh --torch-wheel ~/wheels/torch-2.14.1+cpu-cp311-cp311-linux_x86_64.whl
# Either builds in a separate environment (build/bundle-venv), leaving .venv untouched.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -1)
TORCH_INDEX="" TORCH_WHEEL="" DEB=1 SMOKE=1
while [ $# -gt 0 ]; do
  case "$1" in
    --torch-index) TORCH_INDEX=$2; shift 2 ;;
    --torch-wheel) TORCH_WHEEL=$2; shift 2 ;;
    --no-deb) DEB=0; shift ;;
    --no-smoke) SMOKE=0; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "build.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

started=$(date +%s)
if [ -n "$TORCH_INDEX$TORCH_WHEEL" ]; then
  VENV="$ROOT/build/bundle-venv"
  PY=${PYTHON:-python3.11}
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  "$VENV/bin/python" -m pip install --quiet --upgrade pip
  if [ -n "$TORCH_WHEEL" ]; then
    "$VENV/bin/python" -m pip install --quiet "$TORCH_WHEEL" torchvision==0.29.1
  else
    "$VENV/bin/python" -m pip install --quiet --index-url "$TORCH_INDEX" torch==2.14.1 torchvision==0.29.1
  fi
  "$VENV/bin/python" -m pip install --quiet "$ROOT"
else
  bash packaging/dev.sh setup
  VENV="$ROOT/.venv"
fi
"$VENV/bin/python" -m pip install --quiet "pyinstaller>=6.10" "build>=1.2"

echo "== PyInstaller (one folder; analysing torch takes a while)"
rm -rf build/pyinstaller dist/pneumofl
"$VENV/bin/pyinstaller" --noconfirm --clean --log-level WARN \
  --workpath build/pyinstaller --distpath dist packaging/bundle/pneumofl.spec
BUNDLE=dist/pneumofl
# Every command is the one executable under another name (Flower starts its helpers by name).
for name in $("$VENV/bin/python" -c "import sys; sys.path.insert(0, 'packaging/bundle'); from contents import COMMANDS; print(' '.join(n for n in COMMANDS if n != 'pneumofl'))"); do
  ln -sf pneumofl "$BUNDLE/$name"
done
cp packaging/install.sh "$BUNDLE/install.sh"
cp packaging/pneumofl.desktop resources/icons/pneumofl.svg "$BUNDLE/"
echo "$VERSION" > "$BUNDLE/VERSION"

if [ "$SMOKE" = 1 ]; then
  echo "== smoke test of the bundle as built"
  bash packaging/smoke.sh "$BUNDLE"
fi

echo "== archive"
ARCHIVE="dist/pneumofl-$VERSION-linux-x86_64.tar.gz"
tar -C dist -cf - pneumofl | gzip -1 > "$ARCHIVE"
if [ "$DEB" = 1 ]; then
  echo "== .deb"
  STAGE=build/deb/pneumofl_"$VERSION"_amd64
  rm -rf "$STAGE"
  mkdir -p "$STAGE/DEBIAN" "$STAGE/opt" "$STAGE/usr/bin" "$STAGE/usr/share/applications" "$STAGE/usr/share/icons/hicolor/scalable/apps"
  cp -a "$BUNDLE" "$STAGE/opt/pneumofl"
  rm -f "$STAGE/opt/pneumofl/install.sh"
  ln -s /opt/pneumofl/pneumofl "$STAGE/usr/bin/pneumofl"
  sed "s|^Exec=.*|Exec=/opt/pneumofl/pneumofl gui|; s|^Icon=.*|Icon=pneumofl|" packaging/pneumofl.desktop \
    > "$STAGE/usr/share/applications/pneumofl.desktop"
  cp resources/icons/pneumofl.svg "$STAGE/usr/share/icons/hicolor/scalable/apps/pneumofl.svg"
  size=$(du -sk "$STAGE" | cut -f1)
  cat > "$STAGE/DEBIAN/control" <<CONTROL
Package: pneumofl
Version: $VERSION
Architecture: amd64
Maintainer: PneumoFL <pneumofl@localhost>
Installed-Size: $size
Depends: libc6, libegl1, libgl1, libfontconfig1, libxkbcommon0, libdbus-1-3
Recommends: libxcb-cursor0, libxkbcommon-x11-0, libxcb-icccm4, libxcb-image0, libxcb-keysyms1, libxcb-randr0, libxcb-render-util0, libxcb-shape0, libxcb-xkb1
Section: science
Priority: optional
Description: Chest X-ray pneumonia classifier training, centrally or as a Flower federated node
 Every metric recorded, drawn live, streamed to browsers. Self-contained: no Python needed.
CONTROL
  dpkg-deb --root-owner-group -Zgzip -z1 --build "$STAGE" "dist/pneumofl_${VERSION}_amd64.deb" >/dev/null
fi
echo "== wheel"
"$VENV/bin/python" -m build --wheel --outdir dist . >/dev/null

elapsed=$(( $(date +%s) - started ))
echo
echo "Built in $((elapsed / 60)) min $((elapsed % 60)) s:"
du -sh "$BUNDLE" dist/*.tar.gz dist/*.deb dist/*.whl 2>/dev/null
