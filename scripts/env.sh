#!/usr/bin/env bash
# Print the path of occreid's virtual environment, creating it first when needed.
#
# The environment lives outside the clone, in ${OCCREID_CACHE:-~/.cache/occreid}/venv-<hash>, where <hash>
# covers the Python version, the dependency list of pyproject.toml and requirements/constraints.txt: a new clone with the same
# dependency list reuses it (no reinstall), a changed list builds a new one. A marker written last tells a
# finished environment from an interrupted install, which is wiped and rebuilt.
# The project itself is installed editable (no dependencies, ~3 s) whenever the environment last served
# another clone, so the `occreid` command always runs this clone's code.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
python=${PYTHON:-python3}
# The key covers what is installed, not the rest of pyproject.toml (editing pytest settings rebuilds nothing).
deps=$("$python" -c 'import sys, tomllib; p = tomllib.load(open(sys.argv[1], "rb"))["project"]; print("\n".join(p["dependencies"] + p["optional-dependencies"]["test"]))' "$root/pyproject.toml")
key=$( { "$python" --version 2>&1; echo "$deps"; cat "$root/requirements/constraints.txt"; } | sha256sum | cut -c1-16)
cache=${OCCREID_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/occreid}
venv="$cache/venv-$key"
quiet() { grep -v -e 'is ignored: it is neither a file nor a directory' -e '^\s*$' >&2 || true; }
mkdir -p "$cache"
# One builder at a time: parallel callers (a Snakemake job array, several shells) wait for the first.
exec 9>"$cache/.lock-$key"
flock 9
if [ ! -f "$venv/.complete" ]; then
  # A venv hard-codes its own path in its scripts, so it is built in place; the .complete marker, written
  # last, is what says it is finished (a half-built one is wiped and rebuilt).
  rm -rf "$venv"
  echo "occreid: creating the environment $venv (about 5 minutes, once per dependency set)" >&2
  start=$(date +%s)
  "$python" -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade "pip>=24" "setuptools>=68" wheel 2>&1 | quiet
  # Dependencies only (read from pyproject.toml), with the tested torch pair.
  echo "$deps" > "$venv/requirements.txt"
  "$venv/bin/python" -m pip install -q -c "$root/requirements/constraints.txt" -r "$venv/requirements.txt" 2>&1 | quiet
  date -u +%FT%TZ > "$venv/.complete"
  echo "occreid: environment ready in $(( $(date +%s) - start )) s" >&2
fi
if [ "$(cat "$venv/.project-root" 2>/dev/null)" != "$root" ]; then
  log=$(mktemp)
  if ! "$venv/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$root" > "$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"; exit 1
  fi
  rm -f "$log"
  echo "$root" > "$venv/.project-root"
fi
flock -u 9
echo "$venv"
