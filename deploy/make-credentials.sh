#!/usr/bin/env bash
# Creates everything the production broker (deploy/mosquitto/mosquitto.conf)
# and the programs need to run one job with per-client credentials:
#
#   passwd                 mosquitto password file (hashed): coordinator, monitor, lease, agent-0..agent-N-1
#   acl                    mosquitto ACL for the job (see below)
#   <user>.password        each user's random password, mode 0600 (for --password-file)
#   ca.crt, ca.key         a private test CA (keep ca.key off the gateways)
#   server.crt, server.key the broker's certificate: CN localhost, SAN localhost,
#                          127.0.0.1 and every --san
#   <user>.crt, <user>.key a client certificate per user, CN = the user name
#                          (for --cert-file/--key-file; the broker asks for one
#                          only if require_certificate is true)
#   keys/                  the message-signing key pairs (esgd-keygen):
#                          coordinator.key/.pub, agent-<id>.key/.pub. Give a
#                          gateway its agent-<id>.key and coordinator.pub, the
#                          coordinator its coordinator.key and every agent's .pub
#                          (the programs' --keys folder)
#
# ACL scheme: user names are "coordinator", "monitor" (read-only, for
# esgd-watch), "lease" (the coordinator's look at the lease before it
# connects, --lease-username) and "agent-<id>" where <id> is the agent's --id. Mosquitto's
# %u would give "agent-<id>", not the bare <id> the topics carry, so the ACL
# has one explicit block per user instead of `pattern` lines. Per job
# (topics in schemas/messages.md; '+' matches exactly one level):
#   coordinator  writes esgd/<job>/config, esgd/<job>/model, esgd/<job>/round/+/model
#                reads  esgd/<job>/round/+/grad/+, esgd/<job>/status/+
#                both   esgd/<job>/lease (which coordinator runs the job)
#   agent-<id>   writes esgd/<job>/round/+/grad/<id>, esgd/<job>/status/<id> (also its Last Will)
#                reads  esgd/<job>/config, esgd/<job>/model, esgd/<job>/round/+/model
#   monitor      reads  esgd/<job>/#
#   lease        reads  esgd/<job>/lease
# Anything not granted is denied: mosquitto drops a denied PUBLISH (MQTT 5
# clients get reason "not authorized") and delivers nothing a reader may not read.
#
# usage: deploy/make-credentials.sh OUT_DIR --agents N [--job NAME] [--san DNS:broker]...
#          [--days D] [--force]
# Needs mosquitto_passwd (Debian package mosquitto), openssl and esgd-keygen
# (on PATH, in ESGD_KEYGEN, or in the source tree's build/core/).
set -euo pipefail

usage() { awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; }
out="" agents="" job=mnist days=825 force=0
sans=()
while [ $# -gt 0 ]; do
    case $1 in
    --agents) agents=$2; shift 2 ;;
    --job) job=$2; shift 2 ;;
    --san) sans+=("$2"); shift 2 ;;
    --days) days=$2; shift 2 ;;
    --force) force=1; shift ;;
    --help|-h) usage; exit 0 ;;
    -*) echo "make-credentials: unknown option $1 (see --help)" >&2; exit 2 ;;
    *) [ -z "$out" ] || { echo "make-credentials: one OUT_DIR only" >&2; exit 2; }; out=$1; shift ;;
    esac
done
[ -n "$out" ] || { echo "make-credentials: OUT_DIR is required (see --help)" >&2; exit 2; }
[[ $agents =~ ^[1-9][0-9]*$ ]] || { echo "make-credentials: --agents N (N >= 1) is required" >&2; exit 2; }
# The same rule as the programs' --job: it becomes a topic level.
[[ $job =~ ^[A-Za-z0-9_.-]+$ ]] || { echo "make-credentials: job name must be [A-Za-z0-9_.-]+" >&2; exit 2; }
[[ $days =~ ^[1-9][0-9]*$ ]] || { echo "make-credentials: --days must be a positive integer" >&2; exit 2; }
for san in "${sans[@]}"; do
    [[ $san =~ ^(DNS|IP):[A-Za-z0-9.:-]+$ ]] || { echo "make-credentials: --san must be DNS:name or IP:address, not $san" >&2; exit 2; }
done
for tool in mosquitto_passwd openssl; do
    command -v "$tool" >/dev/null || { echo "make-credentials: $tool not found (apt-get install mosquitto openssl)" >&2; exit 1; }
done
keygen=${ESGD_KEYGEN:-$(command -v esgd-keygen || echo "$(dirname "$0")/../build/core/esgd-keygen")}
[ -x "$keygen" ] || { echo "make-credentials: esgd-keygen not found (install the esgd package or build it; or set ESGD_KEYGEN)" >&2; exit 1; }
if [ -e "$out/passwd" ] && [ "$force" -eq 0 ]; then
    echo "make-credentials: $out/passwd exists; use --force to replace every file" >&2
    exit 1
fi

mkdir -p "$out"
umask 077
users=(coordinator monitor lease)
for ((i = 0; i < agents; i++)); do users+=("agent-$i"); done

# Passwords: 32 random base64 characters each. They go to mosquitto_passwd -U
# through a private file, never on a command line (visible in ps).
plain=$(mktemp "$out/.passwd-plain.XXXXXX")
trap 'rm -f "$plain"' EXIT
for user in "${users[@]}"; do
    password=$(openssl rand -base64 32 | tr -d '/+=\n' | cut -c1-32)
    printf '%s\n' "$password" >"$out/$user.password"
    printf '%s:%s\n' "$user" "$password" >>"$plain"
done
mosquitto_passwd -U "$plain" >/dev/null
mv "$plain" "$out/passwd"
chmod 0640 "$out/passwd"

{
    echo "# mosquitto ACL for eSGD job '$job', written by deploy/make-credentials.sh."
    echo "# One block per user; '+' matches exactly one topic level. Not granted = denied."
    echo
    echo "user coordinator"
    echo "topic write esgd/$job/config"
    echo "topic write esgd/$job/model"
    echo "topic write esgd/$job/round/+/model"
    echo "topic write esgd/$job/agent/+/model"
    echo "topic write esgd/$job/agent/+/config"
    echo "topic read esgd/$job/round/+/grad/+"
    echo "topic read esgd/$job/status/+"
    echo "topic readwrite esgd/$job/lease"
    echo
    echo "# esgd-watch and dashboards: read everything of the job, write nothing."
    echo "user monitor"
    echo "topic read esgd/$job/#"
    echo
    echo "# esgd-coordinator --lease-username: at start, whether another coordinator runs the job,"
    echo "# under an identity (and so a client id) other than the coordinator's."
    echo "user lease"
    echo "topic read esgd/$job/lease"
    for ((i = 0; i < agents; i++)); do
        echo
        echo "user agent-$i"
        echo "topic read esgd/$job/config"
        echo "topic read esgd/$job/model"
        echo "topic read esgd/$job/round/+/model"
        echo "topic write esgd/$job/round/+/grad/$i"
        echo "topic write esgd/$job/status/$i"
        echo "topic read esgd/$job/agent/$i/model"
        echo "topic read esgd/$job/agent/$i/config"
    done
} >"$out/acl"
chmod 0644 "$out/acl"

# A private CA, the broker's certificate and one client certificate per user
# (EC P-256, SHA-256).
ext=$(mktemp "$out/.ext.XXXXXX")
trap 'rm -f "$plain" "$ext"' EXIT
new_key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; }
sign() { # sign NAME SUBJECT: NAME.key -> NAME.crt signed by the CA with the extensions in $ext
    openssl req -new -key "$out/$1.key" -subj "$2" -out "$out/$1.csr"
    openssl x509 -req -in "$out/$1.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
        -CAserial "$out/ca.srl" -days "$days" -sha256 -extfile "$ext" -out "$out/$1.crt" 2>/dev/null
    rm -f "$out/$1.csr"
}

new_key "$out/ca.key"
openssl req -x509 -new -key "$out/ca.key" -subj "/O=esgd/CN=esgd test CA" -days "$days" -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -out "$out/ca.crt"

san_list="DNS:localhost,IP:127.0.0.1"
for san in "${sans[@]}"; do san_list+=",$san"; done
cat >"$ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=$san_list
EXT
new_key "$out/server.key"
sign server "/O=esgd/CN=localhost"

cat >"$ext" <<EXT
basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth
EXT
for user in "${users[@]}"; do
    new_key "$out/$user.key"
    sign "$user" "/O=esgd/CN=$user"
done
chmod 0644 "$out"/*.crt
chmod 0600 "$out"/*.key "$out"/*.password
[ "$force" -eq 0 ] || rm -rf "$out/keys"
"$keygen" --dir "$out/keys" --agents "$agents" 2>/dev/null

echo "make-credentials: job '$job', users ${users[*]}; files in $out" >&2
