#!/bin/sh
# One HTTP connection on stdin/stdout (run by "nc -ll -e").
# Reads the request head, maps the path to a CGI script, then replays the
# rewritten request into "busybox httpd -i", whose stdout is the socket.
CR=$(printf '\r')
IFS= read -r -t 10 reqline || exit 0
reqline=${reqline%"$CR"}
method=${reqline%% *}
rest=${reqline#* }
target=${rest%% *}
proto=${rest#* }
[ "$proto" = "$rest" ] && proto=HTTP/1.0

headers=
n=0
while IFS= read -r -t 10 h; do
    h=${h%"$CR"}
    [ -z "$h" ] && break
    n=$((n + 1))
    [ "$n" -gt 100 ] && break
    headers="$headers$h$CR
"
done

path=${target%%\?*}
query=
case $target in *\?*) query="?${target#*\?}" ;; esac

case $path in
    /) path=/cgi-bin/index ;;
    /actuator/health | /actuator/health/) path=/cgi-bin/health ;;
    /version) path=/cgi-bin/version ;;
    /env) path=/cgi-bin/env ;;
    /sse) path=/cgi-bin/sse ;;
    /info) path=/cgi-bin/info ;;
esac

[ -n "$BGTEST_QUIET" ] || echo "bgtest: $method $target" >&2
printf '%s %s%s %s\r\n%s\r\n' "$method" "$path" "$query" "$proto" "$headers" | /bin/busybox httpd -i -h /www
