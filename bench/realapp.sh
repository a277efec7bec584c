#!/usr/bin/env bash
# End-to-end check of lacquer in front of a real Django app (issue 15, "in front of real
# apps"). Not run in CI: it needs PyPI the first time (pip install django gunicorn whitenoise
# into bench/realapp/.venv) and takes about half a minute.
#
# It starts bench/realapp (Django with sessions, CSRF-protected forms, django.contrib.auth at
# /accounts/, the admin at /admin/, public pages without caching headers, whitenoise under
# /static/, GZipMiddleware) under gunicorn on an ephemeral loopback port, puts lacquer in front
# with the Django recipe of docs/recipes.md, browses through it with Python (check.py) and
# prints what it saw and a summary table. Exit status 0 only when every check passes.
#
#   bench/realapp.sh                         # the recipe of docs/recipes.md (`rules:`)
#   RECIPE=legacy bench/realapp.sh           # without `rules:` (cache.default_ttl instead)
#   CONFIG=my.yaml bench/realapp.sh          # your own file; @PROXY@ @ADMIN@ @APP@ are
#                                            # replaced by the loopback addresses in use
#   LACQUER_BIN=/tmp/lacquer-a bench/realapp.sh
#
# Environment: LACQUER_BIN (default target/release/lacquer), RECIPE (rules | legacy),
# CONFIG, INVALIDATE_ON_UNSAFE (true | false, for purge.invalidate_on_unsafe in the recipes),
# VENV (default bench/realapp/.venv), VISITORS (per hit-ratio check, default 10),
# WORKERS (gunicorn sync workers, default 2), KEEP=1 keeps the work directory (logs, config).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
APPDIR=$ROOT/bench/realapp
LACQUER_BIN=${LACQUER_BIN:-$ROOT/target/release/lacquer}
RECIPE=${RECIPE:-rules}
VENV=${VENV:-$APPDIR/.venv}
VISITORS=${VISITORS:-10}
WORKERS=${WORKERS:-2}
# true: lacquer's default (a successful POST evicts its own URL; the URL in its Location only
# with purge.invalidate_locations, off by default); false: rely on TTLs and explicit purges
INVALIDATE_ON_UNSAFE=${INVALIDATE_ON_UNSAFE:-true}
ADMIN_USER=admin
ADMIN_PASSWORD=bench-realapp-pw

[ -x "$LACQUER_BIN" ] || { echo "no lacquer binary at $LACQUER_BIN (set LACQUER_BIN)" >&2; exit 2; }

# --- the Django recipe (docs/recipes.md). Edit here, or pass CONFIG=file. ------------------
recipe_rules() {
  cat <<EOF
bypass:
  # the cookies that make a page personal: the session, and Django's flash messages (set
  # for the one page after a form post). csrftoken is not, and analytics cookies never
  # bypass (bypass.ignore_cookies): both are removed from the requests the cache serves
  session_cookies: ["sessionid", "messages"]
rules:
  # whitenoise: hashed names, far-future max-age; the same for everyone
  - match: {path: "/static/*"}
    cookies: ignore
    ttl: "1d"
  # forms and per-user pages: straight to the app, cookies and all (the CSRF cookie must
  # reach the app, and its Set-Cookie the browser)
  - match: {path: ["/admin", "/admin/*", "/accounts/*", "/contact/*"]}
    pass: true
  # public pages that send no caching headers (Django's default)
  - match: {path: ["/", "/articles/*"]}
    ttl: "5m"
    status_ttl: {"404": "10s"}
purge:
  allow: ["127.0.0.1/32", "::1/128"]
  invalidate_on_unsafe: $INVALIDATE_ON_UNSAFE
EOF
}

recipe_legacy() {
  cat <<EOF
bypass:
  session_cookies: ["sessionid", "messages"]
cache:
  # every page without caching headers is fresh for 5 minutes (404s too)
  default_ttl: "5m"
purge:
  allow: ["127.0.0.1/32", "::1/128"]
  invalidate_on_unsafe: $INVALIDATE_ON_UNSAFE
EOF
}
# ---------------------------------------------------------------------------------------------

WORK=$(mktemp -d /tmp/lacquer-realapp.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

if [ ! -x "$VENV/bin/gunicorn" ]; then
  echo "creating $VENV (pip install django gunicorn whitenoise)"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check django gunicorn whitenoise
fi
PY=$VENV/bin/python

free_port() { "$PY" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
APP_PORT=$(free_port); PROXY_PORT=$(free_port); ADMIN_PORT=$(free_port)
while [ "$PROXY_PORT" = "$APP_PORT" ] || [ "$ADMIN_PORT" = "$APP_PORT" ] || [ "$ADMIN_PORT" = "$PROXY_PORT" ]; do
  PROXY_PORT=$(free_port); ADMIN_PORT=$(free_port)
done

export PYTHONDONTWRITEBYTECODE=1 REALAPP_DATA=$WORK/data REALAPP_LOG=$WORK/requests.log DJANGO_SETTINGS_MODULE=realapp.settings
mkdir -p "$REALAPP_DATA"
cd "$APPDIR"
"$PY" manage.py migrate -v0
"$PY" manage.py collectstatic --noinput -v0
DJANGO_SUPERUSER_PASSWORD=$ADMIN_PASSWORD "$PY" manage.py createsuperuser --noinput \
  --username "$ADMIN_USER" --email admin@example.com >/dev/null

"$VENV/bin/gunicorn" --bind "127.0.0.1:$APP_PORT" --workers "$WORKERS" \
  realapp.wsgi:application > "$WORK/gunicorn.log" 2>&1 &
PIDS+=($!)

# the config: lacquer's listeners and the app server, then the recipe (or CONFIG: a recipe
# fragment to append, or a whole file when it sets listen/upstreams itself)
fill_in() { sed -e "s/@PROXY@/127.0.0.1:$PROXY_PORT/g" -e "s/@ADMIN@/127.0.0.1:$ADMIN_PORT/g" \
                -e "s/@APP@/127.0.0.1:$APP_PORT/g" "$1"; }
if [ -n "${CONFIG:-}" ] && grep -qE '^(listen|upstreams):' "$CONFIG"; then
  RECIPE="custom ($CONFIG)"
  fill_in "$CONFIG" > "$WORK/lacquer.yaml"
else
  {
    cat <<EOF
listen: ["127.0.0.1:$PROXY_PORT"]
admin: {listen: "127.0.0.1:$ADMIN_PORT"}
upstreams: [{addr: "127.0.0.1:$APP_PORT"}]
access_log: {target: "file", path: "$WORK/access.log"}
EOF
    if [ -n "${CONFIG:-}" ]; then
      fill_in "$CONFIG"
    else
      case "$RECIPE" in
        rules) recipe_rules ;;
        legacy) recipe_legacy ;;
        *) echo "RECIPE must be rules or legacy, got $RECIPE" >&2; exit 2 ;;
      esac
    fi
  } > "$WORK/lacquer.yaml"
  if [ -n "${CONFIG:-}" ]; then RECIPE="custom ($CONFIG)"; fi
fi

echo "lacquer in front of a real Django app"
echo "  binary : $LACQUER_BIN ($("$LACQUER_BIN" --version 2>&1 | head -1))"
echo "  recipe : $RECIPE"
APP_VERSIONS=$("$PY" - "$WORKERS" <<'PYEOF'
import sys
from importlib.metadata import version as v
print(f"Django {v('django')}, gunicorn {v('gunicorn')} ({sys.argv[1]} sync workers), "
      f"whitenoise {v('whitenoise')}, Python {sys.version.split()[0]}")
PYEOF
)
echo "  app    : $APP_VERSIONS"
echo "  config :"
sed 's/^/    | /' "$WORK/lacquer.yaml"

if ! "$LACQUER_BIN" --config "$WORK/lacquer.yaml" --test > "$WORK/test.out" 2>&1; then
  echo
  echo "lacquer refused this config:"
  sed 's/^/    /' "$WORK/test.out"
  [ "$RECIPE" = rules ] && echo "(a binary without \`rules:\` support; RECIPE=legacy uses only older keys)"
  exit 2
fi

"$LACQUER_BIN" --config "$WORK/lacquer.yaml" > "$WORK/lacquer.log" 2>&1 &
PIDS+=($!)

wait_for() { # url
  for _ in $(seq 1 100); do
    if "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=1)' "$1" 2>/dev/null; then
      return 0
    fi
    sleep 0.1
  done
  echo "nothing answers at $1" >&2
  tail -20 "$WORK/gunicorn.log" "$WORK/lacquer.log" >&2 || true
  exit 2
}
wait_for "http://127.0.0.1:$APP_PORT/"
wait_for "http://127.0.0.1:$ADMIN_PORT/healthz"

set +e
"$PY" "$APPDIR/check.py" --proxy "http://127.0.0.1:$PROXY_PORT" --admin "http://127.0.0.1:$ADMIN_PORT" \
  --app "http://127.0.0.1:$APP_PORT" --log "$REALAPP_LOG" \
  --user "$ADMIN_USER" --password "$ADMIN_PASSWORD" --visitors "$VISITORS"
rc=$?
set -e
exit $rc
