#!/usr/bin/env bash
# Install the PneumoFL bundle this script sits in (from the release archive), for you or for everyone.
#
#   ./pneumofl/install.sh              # into ~/.local/share/pneumofl/app, `pneumofl` in ~/.local/bin, a menu entry
#   sudo ./pneumofl/install.sh --system   # into /opt/pneumofl, `pneumofl` in /usr/local/bin, a menu entry for all
#   ./pneumofl/install.sh --uninstall  # removes all of the above (add --system for a system install)
#
# The database, runs, models and settings in your user folders are never touched, also not by --uninstall.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
SYSTEM=0 UNINSTALL=0
for arg in "$@"; do
  case "$arg" in
    --system) SYSTEM=1 ;;
    --uninstall) UNINSTALL=1 ;;
    -h|--help) sed -n '2,8p' "$0"; exit 0 ;;
    *) echo "install.sh: unknown option $arg (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$SYSTEM" = 1 ]; then
  TARGET=/opt/pneumofl BIN=/usr/local/bin APPS=/usr/share/applications ICONS=/usr/share/icons/hicolor/scalable/apps
  if [ "$(id -u)" != 0 ]; then echo "install.sh --system needs root (sudo)." >&2; exit 1; fi
else
  DATA=${XDG_DATA_HOME:-$HOME/.local/share}
  TARGET=$DATA/pneumofl/app BIN=$HOME/.local/bin APPS=$DATA/applications ICONS=$DATA/icons/hicolor/scalable/apps
fi

if [ "$UNINSTALL" = 1 ]; then
  rm -rf "$TARGET"
  rm -f "$BIN/pneumofl" "$APPS/pneumofl.desktop" "$ICONS/pneumofl.svg"
  echo "PneumoFL removed from $TARGET (your runs, database and settings are kept)."
  exit 0
fi

if [ ! -x "$HERE/pneumofl" ]; then
  echo "install.sh must stay in the unpacked pneumofl folder (next to the pneumofl program)." >&2
  exit 1
fi
if [ "$HERE" != "$TARGET" ]; then
  rm -rf "$TARGET.new"
  mkdir -p "$(dirname "$TARGET")"
  cp -a "$HERE" "$TARGET.new"
  rm -rf "$TARGET"
  mv "$TARGET.new" "$TARGET"
fi
mkdir -p "$BIN" "$APPS" "$ICONS"
ln -sf "$TARGET/pneumofl" "$BIN/pneumofl"
cp "$TARGET/pneumofl.svg" "$ICONS/pneumofl.svg"
sed "s|^Exec=.*|Exec=$TARGET/pneumofl gui|; s|^Icon=.*|Icon=pneumofl|" "$TARGET/pneumofl.desktop" > "$APPS/pneumofl.desktop"
command -v update-desktop-database >/dev/null && update-desktop-database "$APPS" >/dev/null 2>&1 || true
echo "PneumoFL $(cat "$TARGET/VERSION" 2>/dev/null || echo) installed in $TARGET; run: pneumofl"
case ":$PATH:" in
  *":$BIN:"*) ;;
  *) echo "Add $BIN to your PATH (for example in ~/.profile) to run pneumofl from a terminal." ;;
esac
