#!/usr/bin/env bash
# Run a Pyro5 name server for the lab in the foreground (Ctrl-C to stop).
set -euo pipefail
usage() {
    echo "usage: $0 [-h]   (host and port from PYROINST_NS_HOST / PYROINST_NS_PORT, default localhost:9090;"
    echo "                  names kept in the file PYROINST_NS_STORAGE, if set)"
}
case "${1:-}" in
    -h|--help) usage; exit 0 ;;
    "") ;;
    *) usage >&2; exit 2 ;;
esac
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
python="${PYTHON:-}"
if [ -z "$python" ]; then
    if [ -x "$here/.venv/bin/python" ]; then python="$here/.venv/bin/python"; else python=python3; fi
fi
storage=()
if [ -n "${PYROINST_NS_STORAGE:-}" ]; then storage=(--storage "$PYROINST_NS_STORAGE"); fi
exec "$python" -m pyroinst ns \
    --host "${PYROINST_NS_HOST:-localhost}" --port "${PYROINST_NS_PORT:-9090}" "${storage[@]}"
