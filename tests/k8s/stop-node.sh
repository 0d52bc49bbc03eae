#!/usr/bin/env bash
# Undoes start-node.sh, also after a failed or half-finished start: stops the kubelet and the scheduler,
# kills every container and shim containerd started, stops containerd, unmounts what they mounted,
# removes the fixed paths outside RUN_DIR (/run/containerd, /var/run/netns, /etc/cni/net.d), the bridge,
# the DNAT rule and the kubelet's cgroups. Usage: stop-node.sh RUN_DIR [APISERVER_PORT]
set -uo pipefail
RUN=$1; APISERVER_PORT=${2:-}; GATEWAY=${GATEWAY:-10.88.0.1}; BRIDGE=${BRIDGE:-cni0}
SOCK=$RUN/containerd.sock
stop() {  # SIGTERM, then SIGKILL after 10 s
  local pid=$1
  kill "$pid" 2>/dev/null || return 0
  for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.2; done
  kill -9 "$pid" 2>/dev/null
}
PIDS=()
[[ -f $RUN/node-pids ]] && mapfile -t PIDS < "$RUN/node-pids"
# kubelet and scheduler first (reverse start order), so nothing restarts the containers killed below
for ((i = ${#PIDS[@]} - 1; i >= 1; i--)); do stop "${PIDS[i]}"; done
if [[ -S $SOCK ]]; then
  for task in $(ctr -a "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr -a "$SOCK" -n k8s.io tasks kill -s SIGKILL "$task" > /dev/null 2>&1
  done
  sleep 1
  for task in $(ctr -a "$SOCK" -n k8s.io tasks ls -q 2>/dev/null); do
    ctr -a "$SOCK" -n k8s.io tasks delete -f "$task" > /dev/null 2>&1
  done
fi
[[ ${#PIDS[@]} -gt 0 ]] && stop "${PIDS[0]}"  # containerd
# shims outlive containerd: their pid files are in the state dir
for pidfile in "$RUN"/containerd/state/io.containerd.runtime.v2.task/*/*/shim.pid; do
  [[ -f $pidfile ]] && kill -9 "$(cat "$pidfile")" 2>/dev/null
done
sleep 0.5
# mounts: container rootfs, snapshots, kubelet volumes, network namespaces; deepest first
findmnt -rn -o TARGET | grep -E "^($RUN|/run/containerd|/var/run/netns|/run/netns)(/|$)" | sort -r \
  | while read -r m; do umount -l "$m" 2>/dev/null; done
rm -rf /run/containerd /var/run/netns/cni-* /etc/cni/net.d/10-bridge.conflist
rmdir /var/run/netns /etc/cni/net.d /etc/cni 2>/dev/null
ip link del "$BRIDGE" 2>/dev/null
if [[ -n $APISERVER_PORT ]]; then
  iptables -t nat -D PREROUTING -d 10.96.0.1/32 -p tcp --dport 443 -j DNAT --to-destination "$GATEWAY:$APISERVER_PORT" 2>/dev/null
fi
# the kubelet's cgroups (cgroup v1, cgroupfs driver): /sys/fs/cgroup/<controller>/kubepods...
for d in /sys/fs/cgroup/*/kubepods*; do
  [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} + 2>/dev/null
done
exit 0
