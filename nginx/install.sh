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
app= server_name=_ listen=80 htpasswd= realm= upstream_file= flag_file= control_listen=127.0.0.1:8099
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
        --nginx-dir) nginx_dir=${2-}; shift ;;
        --nginx) nginx_cmd=${2-}; shift ;;
        --no-reload) reload=no ;;
        -h | --help) sed -n '2,/^set -eu/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) usage "unknown argument $1" ;;
    esac
    shift
done
printf '%s' "$app" | grep -Eq '^[a-z0-9]([a-z0-9-]{0,48}[a-z0-9])?$' || usage "--app must match [a-z0-9-] (metadata.name)"
case $control_listen in 127.* | localhost:* | '[::1]':*) ;; *) usage "--control-listen must be a loopback address" ;; esac
for v in "$server_name" "$listen" "$htpasswd" "$realm" "$upstream_file" "$flag_file" "$nginx_dir"; do
    case $v in *[\;\{\}\"\'\|@]*) usage "values must not contain ; { } quotes | @: $v" ;; esac
done
htpasswd=${htpasswd:-$nginx_dir/bluegreen/$app.htpasswd}
realm=${realm:-$app}
upstream_file=${upstream_file:-$nginx_dir/conf.d/$app.upstream.conf}
flag_file=${flag_file:-$(dirname "$upstream_file")/$app.green}
[ -d "$nginx_dir" ] || usage "$nginx_dir is not a directory (is nginx installed?)"
if [ ! -s "$htpasswd" ]; then
    echo "install.sh: $htpasswd is missing or empty; create it first:  htpasswd -c -m $htpasswd USER" >&2
    exit 2
fi
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
mkdir -p "$(dirname "$site")" "$snippets" "$control_d" "$nginx_dir/conf.d" "$(dirname "$upstream_file")" "$(dirname "$flag_file")"

render() { # template -> stdout
    sed -e "s|@APP@|$app|g" -e "s|@SERVER_NAME@|$server_name|g" -e "s|@LISTEN@|$listen|g" \
        -e "s|@HTPASSWD@|$htpasswd|g" -e "s|@REALM@|$realm|g" -e "s|@FLAG@|$flag_file|g" \
        -e "s|@UPSTREAM_FILE@|$upstream_file|g" -e "s|@PROXY_CONF@|$snippets/bluegreen-proxy.conf|g" \
        -e "s|@CONTROL_LISTEN@|$control_listen|g" -e "s|@CONTROL_D@|$control_d|g" "$1"
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
