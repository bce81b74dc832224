#!/bin/sh
# smtp-probe launcher, installed as /usr/bin/smtp-probe: starts the firmware bundle on Node.js
# with the probe's memory budget (V8 flags derived in scripts/package/budget.ts; the agent's
# heap_limit_mb in /etc/smtp-probe/config.json matches them). The bundle is found relative to
# this script (../lib/smtp-probe/smtp-probe.js), so an unpacked package runs where it lies.
# SMTP_PROBE_NODE, when set, is the command that starts Node instead of `node` (for example the
# qemu-user line that runs an ARM Node on a build machine); it is split into words.
set -e
here=$(dirname "$(readlink -f "$0")")
# shellcheck disable=SC2086 # word splitting of SMTP_PROBE_NODE is intended
exec ${SMTP_PROBE_NODE:-node} @NODE_FLAGS@ "$here/../lib/smtp-probe/smtp-probe.js" "$@"
