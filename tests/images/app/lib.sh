# Sourced by the entrypoint, the router and every CGI script.
# /app/behaviour is written at build time from the build args.
. /app/behaviour
STARTED_FILE=/tmp/bgtest-started

# Centiseconds since boot (container shares the host clock; good enough to
# measure "seconds since the container started" with 10 ms resolution).
uptime_cs() {
    read -r _up _idle < /proc/uptime
    echo "$(( ${_up%%.*} * 100 + 1${_up##*.} - 100 ))"
}

# CGI response head (busybox httpd turns "Status:" into the status line).
# usage: cgi_head "200 OK" "content/type" [extra header lines...]
cgi_head() {
    _status=$1; _ctype=$2; shift 2
    printf 'Status: %s\r\nContent-Type: %s\r\nX-App-Version: %s\r\nX-App-Color: %s\r\nCache-Control: no-store\r\nConnection: close\r\n' \
        "$_status" "$_ctype" "$VERSION" "${BLUEGREEN_COLOR-}"
    for _h in "$@"; do printf '%s\r\n' "$_h"; done
}

# Complete response with a body and a Content-Length.
# usage: cgi_reply "200 OK" "text/plain" "body"
cgi_reply() {
    _body=$3
    cgi_head "$1" "$2" "Content-Length: ${#_body}"
    printf '\r\n%s' "$_body"
}
