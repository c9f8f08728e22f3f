#!/usr/bin/env bash
# Installs Dovecot (the real POP3/IMAP server used by tests and the local stack) when missing.
set -euo pipefail
if command -v dovecot >/dev/null 2>&1 && [ -x /usr/lib/dovecot/pop3 ] && [ -x /usr/lib/dovecot/imap ]; then
  exit 0
fi
if [ "$(id -u)" != 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "Dovecot is missing: install dovecot-core dovecot-pop3d dovecot-imapd (as root)" >&2
  exit 1
fi
SUDO=""; [ "$(id -u)" != 0 ] && SUDO=sudo
echo "installing Dovecot (dovecot-core dovecot-pop3d dovecot-imapd)"
$SUDO apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
  dovecot-core dovecot-pop3d dovecot-imapd >/dev/null
