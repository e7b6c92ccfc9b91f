#!/usr/bin/env bash
# Fills the @NAME@ placeholders of a deploy/bridge template and prints the
# result:
#
#   deploy/bridge/render.sh TEMPLATE NAME=VALUE... >OUT
#
# Every placeholder of TEMPLATE must be given a value and every NAME given
# must occur in TEMPLATE, so a renamed or forgotten placeholder is an error,
# never a broker config with "@CENTRAL_HOST@" left in it. Values are taken
# literally (no '&' or '\' expansion) and may not contain a newline.
set -euo pipefail
[ $# -ge 1 ] && [ -f "$1" ] || { echo "usage: render.sh TEMPLATE NAME=VALUE..." >&2; exit 2; }
template=$1
shift
text=$(<"$template")
# bash 5.2 would otherwise put the matched text in place of an unquoted '&'.
shopt -u patsub_replacement 2>/dev/null || true
for pair in "$@"; do
    name=${pair%%=*}
    value=${pair#*=}
    [[ $pair == *=* && $name =~ ^[A-Z][A-Z0-9_]*$ ]] || { echo "render.sh: expected NAME=VALUE, got '$pair'" >&2; exit 2; }
    [[ $value != *$'\n'* ]] || { echo "render.sh: the value of $name contains a newline" >&2; exit 2; }
    [[ $text == *"@$name@"* ]] || { echo "render.sh: $template has no placeholder @$name@" >&2; exit 2; }
    text=${text//"@$name@"/"$value"}
done
left=$(grep -o '@[A-Z][A-Z0-9_]*@' <<<"$text" | sort -u | tr '\n' ' ' || true)
[ -z "$left" ] || { echo "render.sh: no value for $left(in $template)" >&2; exit 2; }
printf '%s\n' "$text"
