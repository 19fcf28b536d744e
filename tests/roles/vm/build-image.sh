#!/usr/bin/env bash
# Build the Debian 12 test VM image (base.qcow2, vmlinuz, initrd.img, an ssh key) into $1, once per package list.
# The Debian mirror is read from this machine's apt sources at run time so it is never written into the repository.
set -euo pipefail
out=${1:?usage: build-image.sh OUTDIR}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out"
if [ -s "$out/base.qcow2" ] && [ -s "$out/vmlinuz" ] && [ -s "$out/initrd.img" ] && [ -s "$out/id_ed25519" ]; then
  echo "vm image: cached in $out"
  exit 0
fi
start=$(date +%s)
work=$(mktemp -d "${TMPDIR:-/tmp}/ai-assistant-vm-build.XXXXXX")
trap 'rm -rf "$work"' EXIT

sources_file=/etc/apt/sources.list.d/debian.sources
if [ -f "$sources_file" ]; then
  mirror=$(awk '/^URIs:/ && $2 !~ /security/ {print $2; exit}' "$sources_file")
  security=$(awk '/^URIs:/ && $2 ~ /security/ {print $2; exit}' "$sources_file")
else
  mirror=$(awk '$1=="deb" && $0 !~ /security/ {print $2; exit}' /etc/apt/sources.list)
  security=$(awk '$1=="deb" && $0 ~ /security/ {print $2; exit}' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || { echo "build-image.sh: no Debian mirror found in the host's apt sources" >&2; exit 1; }
security=${security:-$mirror-security}

ssh-keygen -q -t ed25519 -N '' -C ai-assistant-test-vm -f "$work/id_ed25519"
packages=$(sed -e 's/#.*//' -e '/^\s*$/d' "$here/image-packages.txt" | paste -sd, -)

# Test image only: the apt timers would take the dpkg lock in the middle of a converge; lynis's daily timer (lynis is
# in the image for test_vm_hardening.py) would audit beside the test's own run and overwrite its report.
mmdebstrap --variant=apt --skip=cleanup/apt/lists --include="$packages" \
  --customize-hook='echo testvm >"$1/etc/hostname"' \
  --customize-hook='printf "auto lo\niface lo inet loopback\nallow-hotplug eth0\niface eth0 inet dhcp\n" >"$1/etc/network/interfaces"' \
  --customize-hook='echo "LABEL=root / ext4 rw,errors=remount-ro 0 1" >"$1/etc/fstab"' \
  --customize-hook="mkdir -p -m700 \"\$1/root/.ssh\" && cp $work/id_ed25519.pub \"\$1/root/.ssh/authorized_keys\"" \
  --customize-hook='for t in apt-daily.timer apt-daily-upgrade.timer lynis.timer; do ln -sf /dev/null "$1/etc/systemd/system/$t"; done' \
  bookworm "$work/rootfs" \
  "deb $mirror bookworm main" "deb $mirror bookworm-updates main" "deb $security bookworm-security main"

truncate -s 8G "$work/base.raw"
mkfs.ext4 -q -F -L root -d "$work/rootfs" "$work/base.raw"
qemu-img convert -O qcow2 "$work/base.raw" "$work/base.qcow2.tmp"
cp "$work"/rootfs/boot/vmlinuz-* "$out/vmlinuz"
cp "$work"/rootfs/boot/initrd.img-* "$out/initrd.img"
cp "$work/id_ed25519" "$work/id_ed25519.pub" "$out/"
mv "$work/base.qcow2.tmp" "$out/base.qcow2"
echo "vm image: built in $(( $(date +%s) - start )) s into $out"
