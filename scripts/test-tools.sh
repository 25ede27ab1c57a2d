#!/usr/bin/env bash
# Installs what the tests use besides the Rust toolchain and the services: Python's aiosmtpd,
# the local SMTP sink that mail tests send to. Idempotent.
set -euo pipefail
if ! python3 -c "import aiosmtpd" 2>/dev/null; then
  python3 -m pip install --quiet --disable-pip-version-check aiosmtpd
fi
python3 -c "import aiosmtpd; print('test tools: aiosmtpd', aiosmtpd.__version__)"
