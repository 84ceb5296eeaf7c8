#!/usr/bin/env bash
# Install the system packages upkeeper's services, demo and tests need — only those missing.
set -euo pipefail

# command to look for -> Debian package that provides it
declare -A NEED=(
  [/usr/lib/postgresql]=postgresql
  [redis-server]=redis-server
  [nginx]=nginx-light
  [/usr/sbin/sshd]=openssh-server
  [age]=age
  [zstd]=zstd
  [goaccess]=goaccess
  [pgbadger]=pgbadger
  [rsyslogd]=rsyslog                # logs.postgres' syslog format: its tests log through a real rsyslogd
  [/usr/sbin/logrotate]=logrotate   # the anchor of bench/app_rotation.py; the logs.nginx rotation test
  [/usr/sbin/nft]=nftables          # security.firewall reads the real ruleset (its tests)
  [npm]=npm                         # security.dependencies runs npm audit (its tests too); pulls in nodejs
  [faketime]=faketime               # libfaketime: the lease tests run a node whose clock is minutes off
  [/usr/share/i18n/locales/ja_JP]=locales  # localedef's sources: the logs.postgres tests of a server logging in Japanese, Russian, German
)

missing=()
for what in "${!NEED[@]}"; do
  if [[ "$what" == /* ]]; then
    [[ -e "$what" ]] || missing+=("${NEED[$what]}")
  else
    command -v "$what" >/dev/null 2>&1 || [[ -x "/usr/sbin/$what" ]] || missing+=("${NEED[$what]}")
  fi
done
# pg_stat_statements and friends ship with postgresql-contrib on older releases
if [[ -d /usr/lib/postgresql ]] && ! ls /usr/share/postgresql/*/extension/pg_stat_statements.control >/dev/null 2>&1; then
  missing+=(postgresql-contrib)
fi

# pg_repack (postgres.maintenance repairs, its tests) for the newest installed server; check_postgres
# is the anchor of bench/maintenance.py
newest_pg=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n | tail -1)
if [[ -n "$newest_pg" && ! -x "$newest_pg/pg_repack" ]]; then
  missing+=("postgresql-$(basename "$(dirname "$newest_pg")")-repack")
fi
command -v check_postgres >/dev/null 2>&1 || missing+=(check-postgres)

if [[ ${#missing[@]} -eq 0 ]]; then
  exit 0
fi

echo "installing system packages: ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then
  if command -v sudo >/dev/null 2>&1; then SUDO="sudo"; else
    echo "Error: missing packages ${missing[*]} and not root (no sudo)." >&2
    echo "Try: apt-get install -y ${missing[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# policy-rc.d keeps apt from starting the services it installs (the tests start their own)
if [[ ! -e /usr/sbin/policy-rc.d ]]; then
  printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null && $SUDO chmod +x /usr/sbin/policy-rc.d
  trap '$SUDO rm -f /usr/sbin/policy-rc.d' EXIT
fi
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "installed: ${missing[*]}"
