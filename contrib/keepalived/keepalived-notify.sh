#!/bin/sh
# keepalived notify hook for rdpbalancer: records this node's VRRP state in one word
# (master, backup, fault or stop) in STATE_FILE, which the balancer reads ([admin] ha_state_file)
# for rdpbalancer_ha_state and the dashboard's badge.
#
# keepalived runs it as: keepalived-notify.sh STATE_FILE INSTANCE|GROUP NAME STATE PRIORITY
# (the configured command, then the type, the instance's name, the new state and the priority).
# Written to a temporary file and renamed: the balancer never reads a half-written word.
set -eu
[ "$#" -ge 4 ] || { echo "usage: $0 STATE_FILE INSTANCE NAME STATE [PRIORITY]" >&2; exit 2; }
file=$1
case "$4" in
    MASTER) word=master ;;
    BACKUP) word=backup ;;
    FAULT) word=fault ;;
    STOP) word=stop ;;
    *) exit 0 ;;   # a state this hook does not know (a newer keepalived): leave the file alone
esac
tmp="$file.$$.tmp"
printf '%s\n' "$word" > "$tmp"
mv -f "$tmp" "$file"
