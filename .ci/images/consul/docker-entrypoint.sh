#!/bin/sh
# The subset of the official hashicorp/consul entrypoint contract that the conformance kit
# relies on (written for this look-alike image, not copied):
#   - arguments starting with "-" are consul arguments;
#   - "agent ..." runs `consul agent -data-dir=$CONSUL_DATA_DIR -config-dir=$CONSUL_CONFIG_DIR
#     $CONSUL_BIND $CONSUL_CLIENT ...`;
#   - "version" and other consul subcommands run consul; anything else is executed as given;
#   - CONSUL_LOCAL_CONFIG (JSON) is written to $CONSUL_CONFIG_DIR/local.json.
# Unlike the official image the agent runs as root (no su-exec/dumb-init in Debian's base).
set -e

data_dir=${CONSUL_DATA_DIR:-/consul/data}
config_dir=${CONSUL_CONFIG_DIR:-/consul/config}
mkdir -p "$data_dir" "$config_dir"

if [ -n "${CONSUL_LOCAL_CONFIG:-}" ]; then
    printf '%s\n' "$CONSUL_LOCAL_CONFIG" > "$config_dir/local.json"
fi

case "${1:-}" in
    -*) set -- consul "$@" ;;
esac

if [ "${1:-}" = agent ]; then
    shift
    # shellcheck disable=SC2086  # CONSUL_BIND/CONSUL_CLIENT hold whole flags, possibly empty
    set -- consul agent -data-dir="$data_dir" -config-dir="$config_dir" ${CONSUL_BIND:-} ${CONSUL_CLIENT:-} "$@"
elif [ -n "${1:-}" ] && [ "$1" != consul ] && consul --help 2>&1 | awk '{ print $1 }' | grep -qxF -- "$1"; then
    set -- consul "$@"
fi

exec "$@"
