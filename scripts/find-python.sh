#!/usr/bin/env bash
# Prints the path of a Python 3.13 interpreter (the Lambda runtime's version), or explains
# how to get one and exits 1.
set -euo pipefail
candidates=()
if command -v pyenv >/dev/null 2>&1; then
  root="$(pyenv root)"
  for p in "$root"/versions/3.13*/bin/python3.13; do [ -x "$p" ] && candidates+=("$p"); done
fi
candidates+=(/usr/bin/python3.13 /usr/local/bin/python3.13)
if command -v python3.13 >/dev/null 2>&1; then candidates+=("$(command -v python3.13)"); fi
for p in "${candidates[@]}"; do
  if [ -x "$p" ] && "$p" -c 'import sys, venv; assert sys.version_info[:2] == (3, 13)' >/dev/null 2>&1; then
    echo "$p"; exit 0
  fi
done
cat >&2 <<'MSG'
Python 3.13 is required (the Lambda runtime is python3.13) and none was found.
Install it with one of:
  pyenv install 3.13            (then re-run make setup)
  apt-get install python3.13 python3.13-venv   (Debian 13 and newer)
MSG
exit 1
