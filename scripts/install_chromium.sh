#!/usr/bin/env bash
# Make sure Debian's Chromium and ChromeDriver are installed: the dashboard page's tests drive
# a real headless Chromium through Selenium (tests/dashboard/test_page_browser.py). Selenium is
# pointed at /usr/bin/chromedriver; it never downloads a browser.
#
#   scripts/install_chromium.sh   # installs with apt-get when it can (root or sudo), else says how
#
# Exit 0 when both are there, 1 when they could not be installed (the browser tests then report
# SKIPPED with the reason).
set -euo pipefail

have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }
if have; then
  echo "chromium present: $(chromium --version 2>/dev/null || echo chromium)"
  exit 0
fi

manual="sudo apt-get install -y chromium chromium-driver"
if command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then
    sudo=""
  elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo="sudo -n"
  else
    sudo="-"
  fi
  if [ "$sudo" != "-" ]; then
    echo "Installing chromium and chromium-driver with apt-get (the dashboard's browser tests) ..."
    if $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1 \
      || { $sudo apt-get update -q >/dev/null 2>&1 \
           && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null 2>&1; }; then
      if have; then
        echo "chromium installed: $(chromium --version 2>/dev/null || echo chromium)"
        exit 0
      fi
    fi
    echo "Installing chromium with apt-get failed." >&2
  fi
fi
echo "chromium/chromedriver are not installed, and this script cannot install them here." >&2
echo "Install them yourself: $manual" >&2
echo "Without them the dashboard's browser tests are skipped." >&2
exit 1
