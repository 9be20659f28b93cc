#!/bin/bash
# The environment contract of the official zookeeper image's entrypoint (written for this
# look-alike image, not copied): when $ZOO_CONF_DIR/zoo.cfg does not exist it is generated from
# ZOO_DATA_DIR, ZOO_DATA_LOG_DIR, ZOO_TICK_TIME, ZOO_INIT_LIMIT, ZOO_SYNC_LIMIT,
# ZOO_AUTOPURGE_*, ZOO_MAX_CLIENT_CNXNS, ZOO_STANDALONE_ENABLED, ZOO_ADMINSERVER_ENABLED,
# ZOO_SERVERS (whitespace-separated "server.N=host:peer:election;clientPort" entries),
# ZOO_4LW_COMMANDS_WHITELIST and ZOO_CFG_EXTRA (whitespace-separated key=value lines);
# $ZOO_DATA_DIR/myid gets ZOO_MY_ID (default 1) unless it exists. Then CMD runs.
# Unlike the official image the server runs as root (no gosu in Debian's base).
set -eu
set -f # the lists below are split on whitespace, never globbed

cfg="$ZOO_CONF_DIR/zoo.cfg"
if [[ ! -f $cfg ]]; then
    {
        echo "dataDir=$ZOO_DATA_DIR"
        echo "dataLogDir=$ZOO_DATA_LOG_DIR"
        echo "tickTime=$ZOO_TICK_TIME"
        echo "initLimit=$ZOO_INIT_LIMIT"
        echo "syncLimit=$ZOO_SYNC_LIMIT"
        echo "autopurge.snapRetainCount=$ZOO_AUTOPURGE_SNAPRETAINCOUNT"
        echo "autopurge.purgeInterval=$ZOO_AUTOPURGE_PURGEINTERVAL"
        echo "maxClientCnxns=$ZOO_MAX_CLIENT_CNXNS"
        echo "standaloneEnabled=$ZOO_STANDALONE_ENABLED"
        echo "admin.enableServer=$ZOO_ADMINSERVER_ENABLED"
        for entry in ${ZOO_SERVERS:-"server.1=localhost:2888:3888;2181"}; do
            echo "$entry"
        done
        if [[ -n ${ZOO_4LW_COMMANDS_WHITELIST:-} ]]; then
            echo "4lw.commands.whitelist=$ZOO_4LW_COMMANDS_WHITELIST"
        fi
        for entry in ${ZOO_CFG_EXTRA:-}; do
            echo "$entry"
        done
    } >"$cfg.tmp"
    mv "$cfg.tmp" "$cfg"
fi

mkdir -p "$ZOO_DATA_DIR" "$ZOO_DATA_LOG_DIR" "$ZOO_LOG_DIR"
if [[ ! -f $ZOO_DATA_DIR/myid ]]; then
    echo "${ZOO_MY_ID:-1}" >"$ZOO_DATA_DIR/myid"
fi

exec "$@"
