# scripts/lib.sh - shared by scripts/run, scripts/stop, scripts/test and
# scripts/bench: install what is missing, build, render a private httpd.
# Sourced, not run.

TOP=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Debian packages the build, the server and the tests need.
BUILD_PACKAGES="apache2 apache2-dev libaprutil1-dbd-sqlite3 libjson-c-dev
  libsqlite3-dev liblz4-dev libssl-dev libwebsockets-dev pkg-config autoconf
  automake libtool make gcc curl"
TEST_PACKAGES="python3 python3-pytest python3-requests python3-websockets
  python3-jsonschema chromium"
WEB="$TOP/web"

die() { echo "$(basename "$0"): $*" >&2; exit 1; }

# apt-get install whichever of the named packages are not installed yet.
ensure_packages() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null \
            | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    [ "$(id -u)" -eq 0 ] || die "missing packages (run as root to install): ${missing[*]}"
    echo "Installing: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq >&2 || die "apt-get update failed"
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2 \
        || die "apt-get install failed"
}

# Configure (once) and make (always: it is incremental); sets MODULE and
# EVENTD.
build_module() {
    cd "$TOP" || die "no $TOP"
    if [ ! -x configure ]; then
        autoreconf -fi >&2 || die "autoreconf failed"
    fi
    if [ ! -f Makefile ]; then
        ./configure --quiet >&2 || die "configure failed"
    fi
    make -s -j"$(nproc)" >&2 || die "make failed"
    MODULE="$TOP/.libs/mod_tracellm.so"
    EVENTD="$TOP/tracellm-eventd"
    [ -f "$MODULE" ] || die "make did not produce $MODULE"
    [ -x "$EVENTD" ] || die "make did not produce $EVENTD"
}

# Swagger UI (served at /docs) and the browser test's driver, pinned by
# web/package-lock.json.
ensure_web() {
    [ -d "$WEB/node_modules/swagger-ui-dist" ] \
        && [ -d "$WEB/node_modules/playwright-core" ] && return 0
    command -v npm >/dev/null 2>&1 || ensure_packages nodejs npm
    # swagger-ui-dist's @scarf/scarf would report the install: it must not.
    (cd "$WEB" && SCARF_ANALYTICS=false npm ci --no-audit --no-fund >&2) \
        || die "npm ci failed"
}

# The httpd apxs names. Asked when needed, not when this file is sourced:
# on a fresh machine apxs (apache2-dev) arrives with ensure_packages.
httpd_binary() {
    echo "$(apxs -q SBINDIR 2>/dev/null)/$(apxs -q TARGET 2>/dev/null)"
}

# start_httpd DATA: start the private httpd of DATA. glibc's per-thread
# caches of freed small blocks are turned off for it: each of a child's 256
# worker threads kept its own (up to 7 blocks of each size to 1 KiB), and
# as more threads served, they held 10 MB more of each child at rest, which
# no malloc_trim reaches. Measured cost: none on reads, 3 % on ingest
# (BENCHMARKS.md). On a system httpd, the same line goes in its
# environment (Debian: /etc/apache2/envvars).
start_httpd() {
    local tcache_off=glibc.malloc.tcache_count=0
    GLIBC_TUNABLES="${GLIBC_TUNABLES:+$GLIBC_TUNABLES:}$tcache_off" \
        "$(httpd_binary)" -f "$1/httpd.conf" -k start
}

# render TEMPLATE OUT DATA PORT EVENTD_PORT USERGROUP: fill the @NAME@
# markers of one of conf/'s templates.
render() {
    python3 - "$@" "$(apxs -q LIBEXECDIR)" "$MODULE" "$EVENTD" "$WEB" <<'PY'
import sys
src, dst, data, port, eport, usergroup, moddir, module, eventd, web = \
    sys.argv[1:11]
text = open(src).read()
for k, v in (("@DATA@", data), ("@PORT@", port), ("@EVENTD_PORT@", eport),
             ("@MODDIR@", moddir), ("@MODULE@", module),
             ("@EVENTD@", eventd), ("@WEB@", web),
             ("@USERGROUP@", usergroup)):
    text = text.replace(k, v)
open(dst, "w").write(text)
PY
}

# render_conf DATA PORT EVENTD_PORT: write DATA/httpd.conf and, for live
# events, DATA/conf.d/eventd.conf.
render_conf() {
    local data=$1 port=$2 eport=$3 usergroup=""
    mkdir -p "$data/run" "$data/conf.d" || die "cannot create $data"
    if [ "$(id -u)" -eq 0 ]; then
        # httpd's children drop to nobody: they must own the database.
        usergroup=$'User nobody\nGroup nogroup'
        chown nobody:nogroup "$data" "$data/run"
        [ -f "$data/tracellm.db" ] && chown nobody:nogroup "$data"/tracellm.db*
    fi
    render "$TOP/conf/httpd-private.conf.in" "$data/httpd.conf" "$data" \
        "$port" "$eport" "$usergroup"
    render "$TOP/conf/eventd-private.conf.in" "$data/conf.d/eventd.conf" \
        "$data" "$port" "$eport" "$usergroup"
    render "$TOP/conf/docs-private.conf.in" "$data/conf.d/docs.conf" \
        "$data" "$port" "$eport" "$usergroup"
}

# wait_healthy PORT SECONDS: until GET / answers 200.
wait_healthy() {
    local port=$1 tries=$(( $2 * 10 ))
    while [ $tries -gt 0 ]; do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$port/")" = 200 ] \
            && return 0
        sleep 0.1
        tries=$((tries - 1))
    done
    return 1
}

# stop_httpd DATA: stop the server of DATA and wait until it has gone.
stop_httpd() {
    local data=$1 pid tries=300
    [ -f "$data/httpd.pid" ] || return 0
    pid=$(cat "$data/httpd.pid")
    "$(httpd_binary)" -f "$data/httpd.conf" -k stop 2>/dev/null || kill "$pid" 2>/dev/null
    while [ $tries -gt 0 ] && { [ -f "$data/httpd.pid" ] || kill -0 "$pid" 2>/dev/null; }; do
        sleep 0.1
        tries=$((tries - 1))
    done
    [ $tries -gt 0 ] || die "httpd (pid $pid) did not stop"
}
