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
. "$(dirname "$0")/lib/apt.sh"

have() { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }
if have; then
  echo "chromium present: $(chromium --version 2>/dev/null || echo chromium)"
  exit 0
fi

if apt_install "chromium and chromium-driver" "the dashboard's browser tests" chromium chromium-driver \
  && have; then
  echo "chromium installed: $(chromium --version 2>/dev/null || echo chromium)"
  exit 0
fi
by_hand "chromium/chromedriver are not installed, and this script cannot install them here." \
  "sudo apt-get install -y chromium chromium-driver" \
  "Without them the dashboard's browser tests are skipped."
exit 1
