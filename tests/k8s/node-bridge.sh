#!/usr/bin/env bash
# The pods' bridge, made before anything starts so that the apiserver, Redis and S3 can listen on its
# gateway address; the CNI bridge plugin then uses it as is. With no kube-proxy, one DNAT rule leads the
# `kubernetes` Service's ClusterIP (10.96.0.1:443) to the apiserver, for the manager pod's in-cluster config.
# Usage: node-bridge.sh APISERVER_PORT   Env: GATEWAY (10.88.0.1), BRIDGE (cni0). stop-node.sh removes both.
set -euo pipefail
PORT=$1; GATEWAY=${GATEWAY:-10.88.0.1}; BRIDGE=${BRIDGE:-cni0}
command -v iptables > /dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables >&2
ip link show "$BRIDGE" > /dev/null 2>&1 || ip link add "$BRIDGE" type bridge
ip addr show dev "$BRIDGE" | grep -q "inet $GATEWAY/" || ip addr add "$GATEWAY/24" dev "$BRIDGE"
ip link set "$BRIDGE" up
RULE=(PREROUTING -d 10.96.0.1/32 -p tcp --dport 443 -j DNAT --to-destination "$GATEWAY:$PORT")
iptables -t nat -C "${RULE[@]}" 2>/dev/null || iptables -t nat -A "${RULE[@]}"
