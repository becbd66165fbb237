#!/bin/sh
# PID 1 of the test app container.
. /app/lib.sh
uptime_cs > "$STARTED_FILE"
port=${BGTEST_PORT:-8081}
echo "bgtest: version=$VERSION health=$HEALTH slow_seconds=$SLOW_SECONDS color=${BLUEGREEN_COLOR-} port=$port" >&2

# busybox httpd cannot map an extension-less path like /actuator/health to a
# CGI (only /cgi-bin/* and *.ext interpreters; the Debian build has no proxy
# support), so a tiny router in front of it, one per connection, rewrites the
# request path and hands the request to "httpd -i" (inetd mode).
# "nc -ll" is busybox's persistent, forking server; its listen backlog is the number of
# -l flags (2 would drop SYNs under a burst and cost clients a 1 s retransmit): use 64.
listen_flags=-$(printf '%064d' 0 | tr 0 l)
nc "$listen_flags" -p "$port" -e /app/router.sh &
server=$!

# sh as PID 1 ignores SIGTERM unless trapped: make "docker stop" quick.
trap 'kill "$server" 2>/dev/null; echo "bgtest: stopping" >&2; exit 0' TERM INT

# crash: exits 1 s after start; crashloop: SLOW_SECONDS (at least 1) after each start, so that under a
# restart policy Docker starts it again and again, and it answers UP in between (a crash loop).
life=
case $HEALTH in
    crash) life=1 ;;
    crashloop) life=$SLOW_SECONDS; [ "$life" -ge 1 ] 2>/dev/null || life=1 ;;
esac
if [ -n "$life" ]; then
    sleep "$life"
    echo "bgtest: crashing on purpose (HEALTH=$HEALTH)" >&2
    kill "$server" 2>/dev/null
    exit 3
fi
wait "$server"
