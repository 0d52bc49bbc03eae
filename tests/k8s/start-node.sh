#!/usr/bin/env bash
# One Kubernetes node on this machine: containerd (CRI, runc, a CNI bridge) + kubelet + kube-scheduler,
# registered with a control plane started by start-control-plane.sh with CP_ADDRESS=$GATEWAY
# (after node-bridge.sh made the bridge that address lives on).
# Usage: start-node.sh BIN_DIR RUN_DIR KUBECONFIG APISERVER_PORT NAME=OCI_ARCHIVE...
#   (each archive's tag is its index's ref.name: localhost/pause=pause.tar holding tag 3.2 -> localhost/pause:3.2)
# Env: NODE_NAME (jq-node), GATEWAY (10.88.0.1: the bridge's address; also where the apiserver, Redis
# and S3 listen for pods), NODE_LABELS, NODE_TAINTS.
# Writes RUN_DIR/node-pids (stop in reverse order) and RUN_DIR/containerd.sock; stop-node.sh undoes all.
# Gotchas on these machines (root without CAP_SYS_RESOURCE, no systemd, cgroup v1):
#   restrict_oom_score_adj=true (else runc: "can't get final child's PID from pipe: EOF"),
#   kubelet oomScoreAdj 0, cgroupfs driver everywhere.
set -euo pipefail
BIN=$1; RUN=$2; KUBECONFIG=$3; APISERVER_PORT=$4; shift 4
NODE_NAME=${NODE_NAME:-jq-node}; GATEWAY=${GATEWAY:-10.88.0.1}; BRIDGE=${BRIDGE:-cni0}
NODE_LABELS=${NODE_LABELS:-jobqueue.io/pool=nvme}; NODE_TAINTS=${NODE_TAINTS:-jobqueue.io/pool=nvme:NoSchedule}
SOCK=$RUN/containerd.sock
need=()  # Debian's containerd 1.6 (CRI v1alpha2, as kubelet 1.20 speaks), runc and the CNI plugins
command -v containerd > /dev/null || need+=(containerd)
command -v runc > /dev/null || need+=(runc)
[[ -x /usr/lib/cni/bridge ]] || need+=(containernetworking-plugins)
if [[ ${#need[@]} -gt 0 ]]; then DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >&2; fi
mkdir -p "$RUN/containerd" "$RUN/cni" "$RUN/kubelet"
: > "$RUN/node-pids"

cat > "$RUN/cni/10-bridge.conflist" <<CNI
{"cniVersion": "0.4.0", "name": "jq-bridge", "plugins": [
  {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
   "ipam": {"type": "host-local", "ranges": [[{"subnet": "${GATEWAY%.*}.0/24", "gateway": "$GATEWAY"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": "$RUN/cni/ipam"}},
  {"type": "portmap", "capabilities": {"portMappings": true}}]}
CNI
cat > "$RUN/containerd.toml" <<TOML
version = 2
root = "$RUN/containerd/root"
state = "$RUN/containerd/state"
[grpc]
  address = "$SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "localhost/pause:3.2"
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$RUN/cni"
TOML
containerd --config "$RUN/containerd.toml" > "$RUN/containerd.log" 2>&1 &
echo $! >> "$RUN/node-pids"
for _ in $(seq 1 50); do [[ -S $SOCK ]] && ctr -a "$SOCK" version > /dev/null 2>&1 && break; sleep 0.2; done
for image in "$@"; do
  ctr -a "$SOCK" -n k8s.io images import --base-name "${image%%=*}" "${image#*=}" >&2
done
ctr -a "$SOCK" -n k8s.io images ls -q >&2

"$BIN/kube-scheduler" --kubeconfig="$KUBECONFIG" --leader-elect=false --port=0 --secure-port=0 \
  > "$RUN/scheduler.log" 2>&1 &
echo $! >> "$RUN/node-pids"

cat > "$RUN/kubelet.yaml" <<YAML
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
oomScoreAdj: 0
failSwapOn: false
authentication: {anonymous: {enabled: true}, webhook: {enabled: false}}
authorization: {mode: AlwaysAllow}
readOnlyPort: 0
healthzPort: 0
address: $GATEWAY
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
YAML
"$BIN/kubelet" --config="$RUN/kubelet.yaml" --kubeconfig="$KUBECONFIG" \
  --container-runtime=remote --container-runtime-endpoint="unix://$SOCK" --runtime-request-timeout=5m \
  --root-dir="$RUN/kubelet" --cert-dir="$RUN/kubelet/pki" \
  --hostname-override="$NODE_NAME" --node-ip="$GATEWAY" --node-labels="$NODE_LABELS" \
  --register-with-taints="$NODE_TAINTS" \
  > "$RUN/kubelet.log" 2>&1 &
echo $! >> "$RUN/node-pids"
echo "$SOCK"
