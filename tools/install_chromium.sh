#!/usr/bin/env bash
# Debian's Chromium for the report's browser test, where apt-get can install it (root); elsewhere
# the test skips with a message. Never fails the setup.
command -v chromium >/dev/null 2>&1 && exit 0
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  { apt-get install -y --no-install-recommends chromium ||
    { apt-get update && apt-get install -y --no-install-recommends chromium; }; } >/dev/null 2>&1 && exit 0
fi
echo "chromium is not installed: the report's browser test will skip (install Debian's chromium to run it)"
exit 0
