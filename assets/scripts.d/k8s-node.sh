#!/bin/bash
# Kubernetes node prerequisites: no swap, overlay and br_netfilter, bridged traffic sysctls,
# containerd with the systemd cgroup driver.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
echo "=== PIM k8s-node provisioning ==="

swapoff -a
sed -i -E 's@^([^#].*\sswap\s.*)$@# \1  # disabled by PIM (kubelet needs swap off)@' /etc/fstab

cat > /etc/modules-load.d/k8s.conf <<'MOD'
overlay
br_netfilter
MOD
modprobe overlay
modprobe br_netfilter

cat > /etc/sysctl.d/99-kubernetes.conf <<'SYS'
net.bridge.bridge-nf-call-iptables  = 1
net.bridge.bridge-nf-call-ip6tables = 1
net.ipv4.ip_forward                 = 1
SYS
sysctl --system

apt-get update
apt-get install -y --no-install-recommends containerd apt-transport-https ca-certificates curl gpg
mkdir -p /etc/containerd
containerd config default > /etc/containerd/config.toml
sed -i 's/SystemdCgroup = false/SystemdCgroup = true/' /etc/containerd/config.toml
systemctl enable containerd
systemctl restart containerd
echo "=== k8s-node provisioning complete ==="
