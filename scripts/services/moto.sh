#!/usr/bin/env bash
# Start moto_server (an in-memory S3 API for tests and local development) on a free
# loopback port and print its endpoint URL; the server runs until this script is
# stopped. moto comes from PyPI with the test extra (pip install -e '.[test]'), not
# from Debian. Tests do not need this script: they start a private instance per session
# with secureconnect.testing.services.MotoServer.
#
#   scripts/services/moto.sh            # → http://127.0.0.1:PORT
#   PORT=5000 scripts/services/moto.sh  # a fixed port
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN="${MOTO_SERVER:-.venv/bin/moto_server}"
if [ ! -x "$BIN" ]; then
  BIN="$(command -v moto_server || true)"
fi
if [ -z "$BIN" ]; then
  echo "moto_server is not installed: .venv/bin/pip install -e '.[test]'" >&2
  exit 1
fi
PORT="${PORT:-$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
echo "http://127.0.0.1:${PORT}"
exec "$BIN" -H 127.0.0.1 -p "$PORT"
