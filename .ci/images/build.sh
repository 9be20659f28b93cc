#!/usr/bin/env bash
# Build look-alike server images from Debian packages, for machines that cannot pull the
# official ones. Each image accepts the same command line / environment as its official
# counterpart, so the conformance kit starts either the same way:
#
#   leadership-test/etcd:local       ~ gcr.io/etcd-development/etcd   (Debian bookworm etcd-server 3.4)
#   leadership-test/zookeeper:local  ~ zookeeper:3.9                  (Debian bookworm zookeeper 3.8)
#   leadership-test/consul:local     ~ hashicorp/consul:1.20          (Debian bullseye consul 1.8)
#
# The base is a `debootstrap --variant=minbase bookworm` rootfs imported as
# leadership-test/debian:bookworm. An image whose inputs have not changed is not rebuilt.
# The Debian mirror is taken from this machine's apt sources (never hard-coded).
#
# Environment:
#   DEBIAN_MIRROR   mirror URI to use instead of the one found in the apt sources
#   FORCE_REBUILD   1 to rebuild every image from scratch (no layer cache)
#   DOCKER          docker client (default: docker)
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
docker=${DOCKER:-docker}
base_tag=leadership-test/debian:bookworm
suite=bookworm
# Bump when the base rootfs recipe below changes.
base_recipe=3
# The legacy builder: Debian's dockerd has no buildx and `--network host` is all we need.
export DOCKER_BUILDKIT=0

say() { printf '[build.sh] %s\n' "$*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }

# First deb URI of a stanza serving $suite (deb822 *.sources, then one-line *.list); failing
# that, the first non-security Debian URI (a host on another release still has the mirror).
apt_mirror() {
    local want=$1 files=() f
    for f in /etc/apt/sources.list.d/*.sources; do [[ -r $f ]] && files+=("$f"); done
    if ((${#files[@]})); then
        awk -v want="$want" '
            function flush() {
                if (types ~ /(^|[ \t])deb([ \t]|$)/ && uris != "") {
                    n = split(suites, s, /[ \t]+/)
                    for (i = 1; i <= n; i++) if (s[i] == want && exact == "") exact = uris
                    if (suites !~ /security/ && fallback == "") fallback = uris
                }
                types = uris = suites = ""
            }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            /^Types:/  { sub(/^Types:[ \t]*/, ""); types = $0 }
            /^URIs:/   { sub(/^URIs:[ \t]*/, ""); split($0, u, /[ \t]+/); uris = u[1] }
            /^Suites:/ { sub(/^Suites:[ \t]*/, ""); suites = $0 }
            END { flush(); print (exact != "" ? exact : fallback) }
        ' "${files[@]}"
    fi
    files=()
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do [[ -r $f ]] && files+=("$f"); done
    if ((${#files[@]})); then
        awk -v want="$want" '
            $1 != "deb" { next }
            { i = 2; if ($i ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } }
            $(i + 1) == want && exact == "" { exact = $i }
            $(i + 1) !~ /security/ && fallback == "" { fallback = $i }
            END { print (exact != "" ? exact : fallback) }
        ' "${files[@]}"
    fi
}

mirror=${DEBIAN_MIRROR:-}
if [[ -z $mirror ]]; then
    mirror=$(apt_mirror "$suite" | awk 'NF { print; exit }')
fi
mirror=${mirror%/}
if [[ -z $mirror ]]; then
    say "ERROR: no Debian mirror found in /etc/apt/sources.list{,.d/*}; set DEBIAN_MIRROR"
    exit 1
fi

label_of() { "$docker" image inspect --format "{{ index .Config.Labels \"$2\" }}" "$1" 2>/dev/null || true; }

build_base() {
    local want="recipe-$base_recipe-$suite"
    if [[ -z ${FORCE_REBUILD:-} && $(label_of "$base_tag" leadership-test.inputs) == "$want" ]]; then
        say "$base_tag: up to date"
        return
    fi
    local t0 root
    t0=$(now)
    root=$(mktemp -d /tmp/leadership-rootfs.XXXXXX)
    cleanup+=("$root" "$root.log")
    say "$base_tag: debootstrap --variant=minbase $suite"
    # From the host's own mirror; the output is shown only if debootstrap fails.
    if ! debootstrap --variant=minbase "$suite" "$root" "$mirror" >"$root.log" 2>&1; then
        tail -n 40 "$root.log" >&2
        [[ -f $root/debootstrap/debootstrap.log ]] && tail -n 40 "$root/debootstrap/debootstrap.log" >&2
        rm -f "$root.log"
        say "ERROR: debootstrap failed"
        exit 1
    fi
    rm -f "$root.log"
    say "$base_tag: debootstrap took $(since "$t0")s"
    # Container-friendly defaults: no service starts from postinst scripts, no recommends,
    # no docs/man/locales (keeps every derived image small).
    printf '#!/bin/sh\nexit 101\n' >"$root/usr/sbin/policy-rc.d"
    chmod 755 "$root/usr/sbin/policy-rc.d"
    cat >"$root/etc/apt/apt.conf.d/90leadership-test" <<'APT'
APT::Install-Recommends "false";
APT::Install-Suggests "false";
Acquire::Languages "none";
Dpkg::Use-Pty "0";
APT
    cat >"$root/etc/dpkg/dpkg.cfg.d/90leadership-test" <<'DPKG'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-exclude=/usr/share/lintian/*
DPKG
    # The mirror is passed to each Dockerfile as a build arg; the image keeps no host names.
    : >"$root/etc/apt/sources.list"
    rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/*.bin "$root"/var/cache/apt/archives/*.deb \
        "$root"/var/log/bootstrap.log "$root"/usr/share/man/* "$root"/usr/share/locale/* "$root"/usr/share/info/*
    find "$root/usr/share/doc" -type f ! -name copyright -delete
    : >"$root/etc/resolv.conf"
    echo localhost >"$root/etc/hostname"
    local t1
    t1=$(now)
    tar -C "$root" --numeric-owner -c . | "$docker" import \
        --change 'CMD ["/bin/bash"]' \
        --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        --change 'ENV DEBIAN_FRONTEND=noninteractive' \
        --change "LABEL leadership-test.inputs=$want" \
        - "$base_tag" >/dev/null
    say "$base_tag: import took $(since "$t1")s (total $(since "$t0")s)"
    rm -rf "$root"
}

# Rebuild when the image's directory or the base image changed.
inputs_of() {
    local dir=$1 base_id
    base_id=$("$docker" image inspect --format '{{.Id}}' "$base_tag")
    {
        echo "$base_id"
        (cd "$dir" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
    } | sha256sum | cut -c1-16
}

build_image() {
    local name=$1 tag="leadership-test/$1:local" want t0
    want=$(inputs_of "$here/$name")
    if [[ -z ${FORCE_REBUILD:-} && $(label_of "$tag" leadership-test.inputs) == "$want" ]]; then
        say "$tag: up to date"
        return
    fi
    t0=$(now)
    say "$tag: building"
    local log
    log=$(mktemp /tmp/leadership-build-"$name".XXXXXX)
    local no_cache=()
    [[ -n ${FORCE_REBUILD:-} ]] && no_cache=(--no-cache)
    if ! "$docker" build --network host --force-rm "${no_cache[@]}" \
        --build-arg "BASE=$base_tag" \
        --build-arg "DEBIAN_MIRROR=$mirror" \
        --label "leadership-test.inputs=$want" \
        -t "$tag" "$here/$name" >"$log" 2>&1; then
        tail -n 60 "$log" >&2
        say "ERROR: building $tag failed (full log: $log)"
        return 1
    fi
    rm -f "$log"
    say "$tag: built in $(since "$t0")s ($("$docker" image inspect --format '{{.Size}}' "$tag" | awk '{ printf "%.0f MB", $1 / 1e6 }'))"
}

cleanup=()
trap 'rm -rf "${cleanup[@]}"' EXIT
start=$(now)
build_base
# One image per folder with a Dockerfile; they are independent: build them side by side
# (downloads overlap with unpacking).
pids=()
for dockerfile in "$here"/*/Dockerfile; do
    name=$(basename "$(dirname "$dockerfile")")
    build_image "$name" &
    pids+=($!)
done
failed=0
for pid in "${pids[@]}"; do wait "$pid" || failed=1; done
if ((failed)); then
    say "ERROR: some images failed to build"
    exit 1
fi
"$docker" image prune -f >/dev/null 2>&1 || true
say "all images ready in $(since "$start")s"
"$docker" image ls --format '  {{.Repository}}:{{.Tag}}  {{.Size}}' 'leadership-test/*' >&2
