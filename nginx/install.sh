#!/bin/sh
# Install the bluegreen-controller Nginx site of one app. Idempotent: files are rewritten only when their
# content changes; `nginx -t` must pass or every file is put back as it was; Nginx is reloaded only when
# something changed (and only if it runs).
#
#   sudo nginx/install.sh --app dialogue --server-name dialogue.example.com
#
# Options (defaults in brackets):
#   --app NAME              app name, as metadata.name in the spec (required)
#   --server-name NAME      server_name of the public site [_]
#   --listen ADDR           listen of the public site [80]
#   --htpasswd FILE         Basic Auth user file, apr1 hashes [<nginx dir>/bluegreen/<app>.htpasswd];
#                           create it first: htpasswd -c -m FILE USER   (or openssl passwd -apr1, see docs/nginx.md)
#   --realm TEXT            Basic Auth realm [<app>]
#   --upstream-file FILE    the spec's nginx.upstreamFile [<nginx dir>/conf.d/<app>.upstream.conf]
#   --flag-file FILE        the spec's nginx.flagFile [<directory of the upstream file>/<app>.green]
#   --control-listen ADDR   loopback address of the control server, the spec's nginx.controlUrl [127.0.0.1:8099]
#   --access-log FILE       JSON-lines access log, the spec's verify.accessLog [/var/log/nginx/bluegreen-<app>.access.log]
#   --maintenance-page FILE the HTML page answered (503) while the app is in maintenance [nginx/maintenance.html];
#                           installed as <nginx dir>/bluegreen/<app>.maintenance.html (see docs/nginx.md)
#   --retry-after SECONDS   the Retry-After header of the maintenance answers [60]
#   --nginx-dir DIR         [/etc/nginx]
#   --nginx CMD             nginx command, e.g. "nginx -p /srv/ng/ -c /srv/ng/nginx.conf" [nginx]
#   --no-reload             do not reload Nginx
#
# Layout: the site goes to sites-available/bluegreen-<app>.conf + a symlink in sites-enabled/ when the
# Debian layout exists, else to conf.d/bluegreen-<app>.conf. The control server is conf.d/bluegreen-control.conf
# (shared by all apps), each app's control route bluegreen/control.d/<app>.conf, the proxy settings
# snippets/bluegreen-proxy.conf. Exit: 0 done (or nothing to do), 1 nginx -t failed (files restored), 2 bad usage.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
app='' server_name=_ listen=80 htpasswd='' realm='' upstream_file='' flag_file='' control_listen=127.0.0.1:8099 access_log=''
maintenance_page=$here/maintenance.html retry_after=60
nginx_dir=/etc/nginx nginx_cmd=nginx reload=yes

usage() { echo "install.sh: $1 (see the header of $0)" >&2; exit 2; }
while [ $# -gt 0 ]; do
    case $1 in
        --app) app=${2-}; shift ;;
        --server-name) server_name=${2-}; shift ;;
        --listen) listen=${2-}; shift ;;
        --htpasswd) htpasswd=${2-}; shift ;;
        --realm) realm=${2-}; shift ;;
        --upstream-file) upstream_file=${2-}; shift ;;
        --flag-file) flag_file=${2-}; shift ;;
        --control-listen) control_listen=${2-}; shift ;;
        --access-log) access_log=${2-}; shift ;;
        --maintenance-page) maintenance_page=${2-}; shift ;;
        --retry-after) retry_after=${2-}; shift ;;
        --nginx-dir) nginx_dir=${2-}; shift ;;
        --nginx) nginx_cmd=${2-}; shift ;;
        --no-reload) reload=no ;;
        -h | --help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) usage "unknown argument $1" ;;
    esac
    shift
done
# Every value ends up in root's nginx config: validate each against a strict grammar (one line, an
# allow-list of characters) rather than a deny-list, so that no value can add a directive (`;`, `{`, a
# newline), expand a variable (`$`), start a comment (`#`) or carry quotes.
export LC_ALL=C
# valid REGEX VALUE: VALUE is one line and matches REGEX (extended, whole line).
valid() {
    case $2 in *"
"*) return 1 ;; esac
    printf '%s\n' "$2" | grep -Eqx -- "$1"
}
octet='(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])'
port='([1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])'
label='[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?'
hostname="$label(\.$label)*\.?"
abspath='/[A-Za-z0-9._+/-]*'
valid '[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])?' "$app" || usage "--app must match [a-z0-9-] (metadata.name)"
valid "(127\.$octet\.$octet\.$octet|localhost|\[::1\]):$port" "$control_listen" ||
    usage "--control-listen must be a loopback address and port: 127.x.y.z:PORT, [::1]:PORT or localhost:PORT"
valid "_|(\*\.)?$hostname( (\*\.)?$hostname)*" "$server_name" || usage "--server-name must be _ or host names (letters, digits, - and .) separated by one space"
# [ADDRESS:]PORT, then nginx listen flags such as default_server, ssl, http2, ipv6only=on.
valid "(($octet\.$octet\.$octet\.$octet|\[[0-9A-Fa-f:.]+\]|\*|$hostname):)?$port( [a-z][a-z0-9_]*(=[a-z0-9]+)?)*" "$listen" ||
    usage "--listen must be [ADDRESS:]PORT [FLAG...] (e.g. 80, 127.0.0.1:8080, '443 ssl')"
valid '[A-Za-z0-9]([A-Za-z0-9 ._:-]{0,62}[A-Za-z0-9._-])?' "${realm:-x}" || usage "--realm may hold letters, digits, space . _ : - (at most 64)"
for opt in "--htpasswd=$htpasswd" "--upstream-file=$upstream_file" "--flag-file=$flag_file" "--nginx-dir=$nginx_dir" "--access-log=$access_log"; do
    v=${opt#*=}
    [ -z "$v" ] || valid "$abspath" "$v" || usage "${opt%%=*} must be an absolute path of letters, digits and . _ + - / (no spaces, quotes, \$ ; { } #)"
done
valid '[1-9][0-9]{0,5}' "$retry_after" || usage "--retry-after must be a number of seconds (1-999999)"
# The page is content, not config: any regular, readable file of at most 64 KiB (nginx serves it with SSI).
[ -f "$maintenance_page" ] && [ -r "$maintenance_page" ] || usage "--maintenance-page $maintenance_page is not a readable regular file"
[ "$(wc -c <"$maintenance_page")" -le 65536 ] || usage "--maintenance-page must be at most 64 KiB"
htpasswd=${htpasswd:-$nginx_dir/bluegreen/$app.htpasswd}
realm=${realm:-$app}
upstream_file=${upstream_file:-$nginx_dir/conf.d/$app.upstream.conf}
flag_file=${flag_file:-$(dirname "$upstream_file")/$app.green}
access_log=${access_log:-/var/log/nginx/bluegreen-$app.access.log}
[ -d "$nginx_dir" ] || usage "$nginx_dir is not a directory (is nginx installed?)"
if [ ! -s "$htpasswd" ]; then
    echo "install.sh: $htpasswd is missing or empty; create it first:  htpasswd -c -m $htpasswd USER" >&2
    exit 2
fi
# shellcheck disable=SC2016 # a literal $2a$ (bcrypt prefix), not an expansion
grep -Eq '^[^:]+:\$2[aby]\$' "$htpasswd" && echo "install.sh: warning: $htpasswd holds bcrypt entries (~35 ms of CPU per request); prefer apr1 (htpasswd -m)" >&2

if [ -d "$nginx_dir/sites-enabled" ]; then
    site=$nginx_dir/sites-available/bluegreen-$app.conf
    link=$nginx_dir/sites-enabled/bluegreen-$app.conf
else
    site=$nginx_dir/conf.d/bluegreen-$app.conf
    link=
fi
snippets=$nginx_dir/snippets
control=$nginx_dir/conf.d/bluegreen-control.conf
control_d=$nginx_dir/bluegreen/control.d
mkdir -p "$(dirname "$site")" "$snippets" "$control_d" "$nginx_dir/bluegreen" "$nginx_dir/conf.d" "$(dirname "$upstream_file")" "$(dirname "$flag_file")" "$(dirname "$access_log")"

# sedval VALUE: VALUE escaped for the replacement side of s|...|...| (the grammars above already rule out
# these characters; escaping anyway means a looser grammar later cannot turn into sed injection).
sedval() { printf '%s' "$1" | sed -e 's/[\\|&]/\\&/g'; }
render() { # template -> stdout
    sed -e "s|@APP@|$(sedval "$app")|g" -e "s|@SERVER_NAME@|$(sedval "$server_name")|g" -e "s|@LISTEN@|$(sedval "$listen")|g" \
        -e "s|@HTPASSWD@|$(sedval "$htpasswd")|g" -e "s|@REALM@|$(sedval "$realm")|g" -e "s|@FLAG@|$(sedval "$flag_file")|g" \
        -e "s|@UPSTREAM_FILE@|$(sedval "$upstream_file")|g" -e "s|@PROXY_CONF@|$(sedval "$snippets/bluegreen-proxy.conf")|g" \
        -e "s|@CONTROL_LISTEN@|$(sedval "$control_listen")|g" -e "s|@CONTROL_D@|$(sedval "$control_d")|g" \
        -e "s|@ACCESS_LOG@|$(sedval "$access_log")|g" -e "s|@RETRY_AFTER@|$(sedval "$retry_after")|g" \
        -e "s|@MAINTENANCE_PAGE@|$(sedval "$nginx_dir/bluegreen/$app.maintenance.html")|g" \
        -e "s|@MAINTENANCE_JSON@|$(sedval "$nginx_dir/bluegreen/$app.maintenance.json")|g" "$1"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
changed=
n=0
# put SOURCE TARGET: replace TARGET atomically when different, remembering how to undo it.
put() {
    n=$((n + 1))
    if [ -f "$2" ] && cmp -s "$1" "$2"; then return 0; fi
    if [ -e "$2" ]; then cp -p "$2" "$work/undo.$n"; echo "cp -p '$work/undo.$n' '$2'" >>"$work/undo"; else echo "rm -f '$2'" >>"$work/undo"; fi
    cp "$1" "$2.bluegreen.tmp" && chmod 0644 "$2.bluegreen.tmp" && mv -f "$2.bluegreen.tmp" "$2"
    echo "installed $2"
    changed=yes
}

render "$here/site.conf.template" >"$work/site" && put "$work/site" "$site"
cp "$here/proxy.conf" "$work/proxy" && put "$work/proxy" "$snippets/bluegreen-proxy.conf"
cp "$maintenance_page" "$work/maintenance.html" && put "$work/maintenance.html" "$nginx_dir/bluegreen/$app.maintenance.html"
cp "$here/maintenance.json" "$work/maintenance.json" && put "$work/maintenance.json" "$nginx_dir/bluegreen/$app.maintenance.json"
render "$here/control.conf.template" >"$work/control" && put "$work/control" "$control"
render "$here/control-app.conf.template" >"$work/control-app" && put "$work/control-app" "$control_d/$app.conf"
if [ ! -e "$upstream_file" ]; then
    # Until the controller writes the include: every name exists, nothing is routed (502).
    printf '# placeholder written by nginx/install.sh; the controller replaces it\n' >"$work/upstream"
    for u in "$app" "$app-blue" "$app-green"; do printf 'upstream %s {\n    server 127.0.0.1:9 down;\n}\n' "$u" >>"$work/upstream"; done
    put "$work/upstream" "$upstream_file"
fi
if [ -n "$link" ] && [ "$(readlink "$link" 2>/dev/null || true)" != "$site" ]; then
    [ -e "$link" ] || [ -L "$link" ] && { echo "install.sh: $link exists and is not our symlink; leaving it" >&2; exit 1; }
    ln -s "$site" "$link" && echo "rm -f '$link'" >>"$work/undo" && echo "enabled $link" && changed=yes
fi

# shellcheck disable=SC2086 # $nginx_cmd is a command line
if ! out=$($nginx_cmd -t 2>&1); then
    echo "$out" >&2
    [ -f "$work/undo" ] && sh "$work/undo"
    echo "install.sh: nginx -t failed; every file is back as it was" >&2
    exit 1
fi
if [ -z "$changed" ]; then
    echo "nothing to do: the site of $app is installed"
    exit 0
fi
if [ "$reload" = yes ]; then
    # shellcheck disable=SC2086
    if $nginx_cmd -s reload 2>/dev/null; then echo "nginx reloaded"; else echo "nginx is not running: start it to serve $app"; fi
fi
