#!/usr/bin/env bash
# The explorer's browser tests drive Debian's Chromium through Playwright (Playwright's own browser download cannot
# work here: see ../shared/TOOLCHAIN.md). `make test` runs this first: Chromium is installed non-interactively when
# it is missing and this user may (root, or sudo without a password); otherwise it stops with one line saying how,
# rather than letting the browser tests be skipped.
set -euo pipefail
CHROMIUM=/usr/bin/chromium
[ -x "$CHROMIUM" ] && exit 0
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if ! sudo -n true 2>/dev/null; then
    echo "make test needs Chromium for the explorer's browser tests: run 'sudo apt-get install -y chromium', then make test again" >&2
    exit 1
  fi
  SUDO="sudo -n"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium
[ -x "$CHROMIUM" ] || { echo "apt-get installed no $CHROMIUM: the explorer's browser tests cannot run" >&2; exit 1; }
