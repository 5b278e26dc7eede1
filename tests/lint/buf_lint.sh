#!/usr/bin/env bash
# buf lint of proto/ with the pinned buf (package.json).
set -eu
root=$1
buf="$root/node_modules/.bin/buf"
if [ ! -x "$buf" ]; then
  echo "buf not installed: run 'make tools' (npm ci) first" >&2
  exit 1
fi
cd "$root"
"$buf" lint
echo "buf lint: clean ($("$buf" --version))"
