#!/usr/bin/env bash
# Adds one site to a bridged deployment (deploy/bridge/README.md), in the
# credentials folder deploy/make-credentials.sh wrote for the job:
#
#   bridge-<site>.password  the site bridge's random password, mode 0600 (site.conf's
#                           BRIDGE_PASSWORD)
#   passwd                  + user bridge-<site> (hashed)
#   acl                     + its block: read config, model, round/+/model, lease; read
#                           agent/<id>/model, write round/+/grad/<id> and status/<id> for
#                           the site's agents only,
#                           and its bridge state $SYS/broker/connection/bridge-<site>/state;
#                           + (once) monitor may read $SYS/# (bridge states, counters)
#   site-<site>/            what the site's broker needs (site.conf's SITE_DIR):
#                           passwd and acl of the site's agents and monitor, ca.crt
#
# usage: deploy/bridge/add-site.sh CREDENTIALS_DIR --job NAME --site NAME --agents ID[,ID...]
# Needs mosquitto_passwd (Debian package mosquitto) and openssl.
set -euo pipefail

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
dir="" job="" site="" agents=""
while [ $# -gt 0 ]; do
    case $1 in
    --job) job=$2; shift 2 ;;
    --site) site=$2; shift 2 ;;
    --agents) agents=$2; shift 2 ;;
    --help|-h) usage; exit 0 ;;
    -*) echo "add-site: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) [ -z "$dir" ] || { echo "add-site: one CREDENTIALS_DIR only" >&2; exit 2; }; dir=$1; shift ;;
    esac
done
[ -n "$dir" ] && [ -f "$dir/passwd" ] && [ -f "$dir/acl" ] && [ -f "$dir/ca.crt" ] ||
    { echo "add-site: CREDENTIALS_DIR must hold make-credentials.sh's passwd, acl and ca.crt (see --help)" >&2; exit 2; }
# The job and the site become topic levels and a client id.
[[ $job =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "add-site: --job NAME ([A-Za-z0-9_.-]+) is required" >&2; exit 2; }
[[ $site =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "add-site: --site NAME ([A-Za-z0-9_.-]+) is required" >&2; exit 2; }
[[ $agents =~ ^(0|[1-9][0-9]*)(,(0|[1-9][0-9]*))*$ ]] || { echo "add-site: --agents ID[,ID...] is required" >&2; exit 2; }
for tool in mosquitto_passwd openssl; do
    command -v "$tool" >/dev/null || { echo "add-site: $tool not found (apt-get install mosquitto openssl)" >&2; exit 1; }
done
user=bridge-$site
# A second bridge under the same name would take the first one's session
# over at every reconnection.
if grep -q "^$user:" "$dir/passwd"; then
    echo "add-site: $dir/passwd already has $user" >&2
    exit 1
fi
IFS=, read -r -a ids <<<"$agents"
for id in "${ids[@]}"; do
    grep -q "^agent-$id:" "$dir/passwd" || { echo "add-site: $dir/passwd has no agent-$id" >&2; exit 1; }
done

umask 077
password=$(openssl rand -base64 32 | tr -d '/+=\n' | cut -c1-32)
printf '%s\n' "$password" >"$dir/$user.password"
# Hashed through a private file, never on a command line (visible in ps).
plain=$(mktemp "$dir/.passwd-plain.XXXXXX")
trap 'rm -f "$plain"' EXIT
printf '%s:%s\n' "$user" "$password" >"$plain"
mosquitto_passwd -U "$plain" >/dev/null
cat "$plain" >>"$dir/passwd"

# mosquitto merges the blocks of a user named twice, so monitor's $SYS line
# can follow make-credentials.sh's block.
monitor_sys=0
grep -q '^topic read \$SYS/#$' "$dir/acl" || monitor_sys=1
{
    echo
    echo "# Bridge of site $site (deploy/bridge/add-site.sh): the job's topics in the"
    echo "# direction the bridge carries them, for agents ${ids[*]} only."
    echo "user $user"
    echo "topic read esgd/$job/config"
    echo "topic read esgd/$job/model"
    echo "topic read esgd/$job/round/+/model"
    echo "topic read esgd/$job/lease"
    for id in "${ids[@]}"; do
        echo "topic write esgd/$job/round/+/grad/$id"
        echo "topic write esgd/$job/status/$id"
        echo "topic read esgd/$job/agent/$id/model"
        echo "topic read esgd/$job/agent/$id/config"
    done
    echo "topic write \$SYS/broker/connection/$user/state"
    if [ "$monitor_sys" = 1 ]; then
        echo
        echo "# The bridges' states and the broker's counters, for monitoring."
        echo "user monitor"
        echo "topic read \$SYS/#"
    fi
} >>"$dir/acl"

# The site broker's own files: only this site's users.
out=$dir/site-$site
mkdir -p "$out"
grep -E "^(monitor|$(printf 'agent-%s|' "${ids[@]}" | sed 's/|$//')):" "$dir/passwd" >"$out/passwd"
{
    echo "# mosquitto ACL of site $site, job '$job' (deploy/bridge/add-site.sh)."
    for id in "${ids[@]}"; do
        echo
        echo "user agent-$id"
        echo "topic read esgd/$job/config"
        echo "topic read esgd/$job/model"
        echo "topic read esgd/$job/round/+/model"
        echo "topic write esgd/$job/round/+/grad/$id"
        echo "topic write esgd/$job/status/$id"
        echo "topic read esgd/$job/agent/$id/model"
        echo "topic read esgd/$job/agent/$id/config"
    done
    echo
    echo "user monitor"
    echo "topic read esgd/$job/#"
    echo "topic read \$SYS/#"
} >"$out/acl"
cp "$dir/ca.crt" "$out/ca.crt"
chmod 0640 "$out/passwd"
chmod 0644 "$out/acl" "$out/ca.crt"
echo "add-site: site $site (agents ${ids[*]}): user $user in $dir/passwd and acl; site files in $out" >&2
