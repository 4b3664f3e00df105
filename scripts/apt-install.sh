#!/bin/sh
# apt-install.sh PACKAGE...: apt-get update, then apt-get install -y the
# packages, waiting up to two minutes for an apt or dpkg lock that another
# process holds (an unattended upgrade, another install) instead of failing.
# The README's set-up commands and .ci/run install through it.
set -eu
wait_s=120
export DEBIAN_FRONTEND=noninteractive

# apt-get install waits for the dpkg lock itself (DPkg::Lock::Timeout), but
# apt-get update does not wait for the lists lock: retry it while the lock
# is what it reports.
deadline=$(( $(date +%s) + wait_s ))
while :; do
  if out=$(apt-get -o DPkg::Lock::Timeout="$wait_s" update -qq 2>&1); then
    break
  fi
  case "$out" in
  *"Could not get lock"* | *"Unable to lock"*)
    if [ "$(date +%s)" -ge "$deadline" ]; then
      printf '%s\napt-install.sh: the apt lock was still held after %ss\n' "$out" "$wait_s" >&2
      exit 1
    fi
    sleep 3
    ;;
  *)
    printf '%s\n' "$out" >&2
    exit 1
    ;;
  esac
done
apt-get -o DPkg::Lock::Timeout="$wait_s" install -y -qq "$@" >/dev/null
