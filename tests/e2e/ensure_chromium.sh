#!/usr/bin/env bash
# Installs Debian's Chromium for the browser tests when it is missing (CI starts on a
# fresh machine). Playwright drives it through executable_path: it never downloads a
# browser of its own.
set -eu
if [ -x /usr/bin/chromium ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
else
  SUDO=
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq chromium fonts-dejavu-core >/dev/null
/usr/bin/chromium --version
