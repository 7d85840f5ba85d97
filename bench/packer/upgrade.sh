#!/bin/bash
# The upgrade a Packer user writes as the first provisioner, for an image with its suite's updates
# applied: the work of PIM's pim-prepare, without PIM's own build-time levers (dpkg's unsafe I/O
# and man-db's trigger off while provisioning, no second apt-get update right after the
# installer's, no apt-get run when nothing is pending). bench/vs-packer.sh gives it to Packer
# under pim-prepare's name; VS_PACKER_PREPARE=pim gives Packer PIM's own script instead.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive
apt-get update
apt-get -y -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold full-upgrade
apt-get -y autoremove --purge
