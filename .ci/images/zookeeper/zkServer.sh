#!/bin/bash
# Minimal stand-in for ZooKeeper's zkServer.sh: only `start-foreground` (what the official
# image's CMD runs) and `print-cmd`, on Debian's jars. Honours ZOOCFGDIR, ZOO_LOG_DIR,
# JVMFLAGS, SERVER_JVMFLAGS and ZK_SERVER_HEAP (MB, default 1000, as upstream).
set -eu

conf_dir=${ZOOCFGDIR:-/conf}
cfg=${2:-$conf_dir/zoo.cfg}
log_dir=${ZOO_LOG_DIR:-/logs}
heap=${ZK_SERVER_HEAP:-1000}
# JVM flags are whitespace-separated lists, as upstream
read -r -a extra_flags <<<"${SERVER_JVMFLAGS:-} ${JVMFLAGS:-}"

cmd=(java
    "-Dzookeeper.log.dir=$log_dir"
    "-Dzookeeper.root.logger=INFO,CONSOLE"
    "-Dlog4j.configuration=file:$conf_dir/log4j.properties"
    "-Xmx${heap}m"
    -XX:+HeapDumpOnOutOfMemoryError "-XX:OnOutOfMemoryError=kill -9 %p"
    "${extra_flags[@]}"
    # zookeeper.jar's manifest names its dependencies; the log4j binding is ours to add
    -cp "$conf_dir:/usr/share/java/zookeeper.jar:/usr/share/java/slf4j-log4j12.jar:/usr/share/java/log4j-1.2.jar"
    org.apache.zookeeper.server.quorum.QuorumPeerMain "$cfg")

case "${1:-}" in
    start-foreground) exec "${cmd[@]}" ;;
    print-cmd) printf '%q ' "${cmd[@]}"; echo ;;
    *)
        echo "usage: $0 {start-foreground|print-cmd} [zoo.cfg]" >&2
        exit 2
        ;;
esac
