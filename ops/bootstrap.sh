# shellcheck shell=bash
# Shared set-up for ops/run and ops/test: Debian packages and the project venv.
# Idempotent: every step checks first and says what it does.

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="$ROOT/.venv"
PY="$VENV/bin/python"

say() { printf '[%s] %s\n' "$(basename "$0")" "$*"; }

ensure_debs() {
    # ensure_debs CMD:PACKAGE ...  installs PACKAGE when CMD is not on PATH
    local missing=() pair cmd pkg
    for pair in "$@"; do
        cmd="${pair%%:*}"; pkg="${pair#*:}"
        command -v "$cmd" >/dev/null 2>&1 || [ -x "/usr/sbin/$cmd" ] || [ -x "/usr/bin/$cmd" ] || missing+=("$pkg")
    done
    [ ${#missing[@]} -eq 0 ] && { say "debian packages present"; return 0; }
    if [ "$(id -u)" -ne 0 ]; then
        say "missing Debian packages: ${missing[*]} (run as root, or install them: apt-get install ${missing[*]})"
        return 1
    fi
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

ensure_venv() {
    # ensure_venv [EXTRA]  creates .venv and installs the project (editable), with an extra
    local extra="${1:-}" base
    if [ ! -x "$PY" ]; then
        base="$(command -v python3.11 || command -v python3)"
        say "creating $VENV with $base"
        "$base" -m venv "$VENV"
        "$PY" -m pip install -q --upgrade pip
    fi
    local spec="$ROOT"; [ -n "$extra" ] && spec="$ROOT[$extra]"
    local stamp="$VENV/.installed-${extra:-base}"
    if [ ! -f "$stamp" ] || [ "$ROOT/pyproject.toml" -nt "$stamp" ]; then
        say "installing msync-agent${extra:+[$extra]} into $VENV"
        "$PY" -m pip install -q -e "$spec"
        touch "$stamp"
    else
        say "venv up to date ($VENV)"
    fi
}
