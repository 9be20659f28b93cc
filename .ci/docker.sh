#!/usr/bin/env bash
# Bring up a Docker daemon on a bare Debian machine. Idempotent: packages are installed only
# when missing and a daemon that already answers is left alone.
#
# No image registry is reachable here and the machine has no bridge/iptables to spare, so the
# daemon runs without a bridge network; containers (and `docker build`) use --network host.
#
# Environment:
#   DOCKERD_LOG   daemon log file        (default /tmp/leadership-dockerd.log)
#   DOCKERD_WAIT  seconds to wait for it (default 60)
set -euo pipefail

log=${DOCKERD_LOG:-/tmp/leadership-dockerd.log}
wait_s=${DOCKERD_WAIT:-60}

say() { printf '[docker.sh] %s\n' "$*" >&2; }

# Which client talks to the daemon: a newer client (e.g. /usr/local/bin/docker) negotiates the
# API version down, but prefer whichever actually answers.
client_ok() {
    local c
    for c in "$(command -v docker || true)" /usr/bin/docker; do
        [[ -n $c && -x $c ]] || continue
        if "$c" info >/dev/null 2>&1; then
            printf '%s\n' "$c"
            return 0
        fi
    done
    return 1
}

missing=()
command -v dockerd >/dev/null 2>&1 || missing+=(docker.io)
command -v debootstrap >/dev/null 2>&1 || missing+=(debootstrap)
[[ -e /usr/share/keyrings/debian-archive-keyring.gpg ]] || missing+=(debian-archive-keyring)
if ((${#missing[@]})); then
    say "installing ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if client=$(client_ok); then
    say "dockerd already running ($client)"
    exit 0
fi

if pgrep -x dockerd >/dev/null 2>&1; then
    say "dockerd is running but not answering yet; waiting"
else
    say "starting dockerd (log: $log)"
    # setsid: the daemon must outlive this script and the shell that ran it.
    setsid dockerd --bridge=none --iptables=false --ip-masq=false >>"$log" 2>&1 </dev/null &
fi

deadline=$((SECONDS + wait_s))
until client=$(client_ok); do
    if ((SECONDS >= deadline)); then
        say "ERROR: dockerd did not answer 'docker info' within ${wait_s}s; last log lines:"
        tail -n 30 "$log" >&2 || true
        exit 1
    fi
    if ! pgrep -x dockerd >/dev/null 2>&1; then
        say "ERROR: dockerd exited; last log lines:"
        tail -n 30 "$log" >&2 || true
        exit 1
    fi
    sleep 0.5
done
say "dockerd ready after $((SECONDS))s ($client, server $("$client" version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
