#!/usr/bin/env bash
# The report-page tests open pages in headless Chromium (Debian's `chromium` package). Install it
# when it is missing and this machine can (root with apt-get); otherwise say why, and those tests
# skip with that reason. Never fails the test run by itself.
set -u
for name in chromium chromium-browser google-chrome; do
  command -v "$name" >/dev/null 2>&1 && exit 0
done
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure_chromium: no Chromium and no way to install it here (needs root and apt-get); the browser tests will skip" >&2
  exit 0
fi
echo "ensure_chromium: installing Debian's chromium for the report-page tests" >&2
if ! DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/tmp/ensure_chromium.log 2>&1; then
  apt-get update -q >>/tmp/ensure_chromium.log 2>&1 &&
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >>/tmp/ensure_chromium.log 2>&1 ||
    echo "ensure_chromium: apt-get could not install chromium (see /tmp/ensure_chromium.log); the browser tests will skip" >&2
fi
exit 0
