# Shared by the scripts in this folder (sourced, not run): the repository root, the
# folder for tools the project installs itself, settings from .env, and apt installs
# that work as root or through sudo.
# shellcheck shell=bash

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# Tools the project installs for itself (just, cmake) and local Postgres/Redis data.
DATA_DIR="$ROOT/.data"
TOOLS_BIN="$DATA_DIR/tools/bin"
export PATH="$TOOLS_BIN:$HOME/.cargo/bin:$PATH"
export DEBIAN_FRONTEND=noninteractive

say() {
    if [ -t 2 ]; then
        printf '\033[1m%s\033[0m\n' "$*" >&2
    else
        printf '%s\n' "$*" >&2
    fi
}
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

# Exports each KEY=value of .env that the environment does not set already (the same
# rule the services follow), so scripts see the settings the fleet will see.
load_dotenv() {
    local file="$ROOT/.env" line key value
    [ -f "$file" ] || return 0
    while IFS= read -r line || [ -n "$line" ]; do
        [[ "$line" =~ ^[[:space:]]*([A-Za-z_][A-Za-z0-9_]*)=(.*)$ ]] || continue
        key="${BASH_REMATCH[1]}"
        value="${BASH_REMATCH[2]}"
        value="${value%\"}"
        value="${value#\"}"
        [ -n "${!key+set}" ] || export "$key=$value"
    done <"$file"
}

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null; then
        sudo "$@"
    else
        die "need root to run: $* (install sudo or run as root)"
    fi
}

# Installs Debian packages (quietly, no prompts); does nothing for an empty list.
APT_UPDATED=""
apt_install() {
    [ "$#" -gt 0 ] || return 0
    command -v apt-get >/dev/null || die "apt-get not found: install $* yourself"
    say "installing $* (apt)"
    if [ -z "$APT_UPDATED" ]; then
        as_root apt-get update -qq >/dev/null
        APT_UPDATED=1
    fi
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Whether version $1 is at least $2 (dotted numbers).
version_at_least() {
    [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n1)" = "$2" ]
}
