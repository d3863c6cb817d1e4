#!/bin/sh
# sysroot.sh CACHE ROOT DEB FILES OUT
# Builds the VM for the kernel TLS path as installed: Debian's own kernel
# (fetched once into CACHE, as build.sh does), the debootstrapped Debian root
# ROOT (systemd, rsync, openssl, kmod) copied with the kernel's modules for
# TLS, AES-GCM, virtio and ext4 added, the package DEB, the files in FILES
# (certificates, scenario-systemd.sh) under /root, and a one-shot unit that
# runs the scenario once the system is up. Writes OUT/vmlinuz, OUT/initrd.gz
# (busybox: loads virtio and ext4, mounts the root, hands over to systemd)
# and OUT/root.img (ext4, made with mke2fs -d). Prints the kernel version.
set -eu
cache=$1 root=$2 deb=$3 files=$4 out=$5
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$cache" "$out"

pkg=$(apt-cache depends linux-image-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
if [ -z "$pkg" ]; then
	pkg=$(cd "$cache" && ls -d linux-image-*-amd64_*.deb 2>/dev/null | sed 's/_.*//' | sort -V | tail -1)
fi
[ -n "$pkg" ] || { echo "no linux-image package known to apt-cache (run apt-get update)" >&2; exit 1; }
kver=${pkg#linux-image-}
if [ ! -f "$cache/$pkg/boot/vmlinuz-$kver" ]; then
	(cd "$cache" && ls ${pkg}_*.deb >/dev/null 2>&1 || apt-get download "$pkg" >&2)
	rm -rf "$cache/$pkg"
	dpkg-deb -x "$cache"/${pkg}_*.deb "$cache/$pkg"
fi
cp "$cache/$pkg/boot/vmlinuz-$kver" "$out/vmlinuz"

sys=$(mktemp -d "${TMPDIR:-/tmp}/ktls-sysroot.XXXXXX")
trap 'rm -rf "$sys"' EXIT
cp -a "$root/." "$sys/"
rm -f "$sys/.complete"

# Only the modules this VM needs: the whole tree is 400 MB.
src="$cache/$pkg/lib/modules/$kver"
dst="$sys/lib/modules/$kver"
mkdir -p "$dst"
cp "$src"/modules.builtin* "$src/modules.order" "$dst/"
for d in kernel/crypto kernel/arch/x86/crypto kernel/net/tls kernel/fs/ext4 kernel/fs/jbd2 kernel/fs/mbcache.ko \
	kernel/lib kernel/drivers/virtio kernel/drivers/block/virtio_blk.ko; do
	mkdir -p "$dst/$(dirname "$d")"
	cp -a "$src/$d" "$dst/$d"
done
chroot "$sys" depmod "$kver"

# The scenario, run once by systemd when the system is up; its lines reach
# the serial console.
cp "$deb" "$sys/root/rsync-ssl-shim.deb"
cp "$files"/* "$sys/root/"
cp "$here/scenario-systemd.sh" "$sys/root/scenario.sh"
cat > "$sys/etc/systemd/system/ktls-scenario.service" <<'EOF'
[Unit]
Description=kernel TLS scenario
[Service]
Type=oneshot
ExecStart=/bin/sh /root/scenario.sh
ExecStopPost=/bin/systemctl --no-block poweroff
StandardOutput=journal+console
StandardError=journal+console
[Install]
WantedBy=multi-user.target
EOF
ln -sf /etc/systemd/system/ktls-scenario.service "$sys/etc/systemd/system/multi-user.target.wants/ktls-scenario.service"
echo ktls-vm > "$sys/etc/hostname"
# The resolver of the client inside: rsync-ssl connects to "localhost".
printf '127.0.0.1 localhost\n::1 localhost ip6-localhost\n127.0.1.1 ktls-vm\n' > "$sys/etc/hosts"
: > "$sys/etc/fstab"
# Nothing else at boot that a test VM does not need (timers that run apt).
# No udev in this root: a getty would wait for its device.
for u in apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer serial-getty@.service getty@.service; do
	ln -sf /dev/null "$sys/etc/systemd/system/$u"
done

# Stage one: busybox loads what the root needs, in modules.dep's order.
init=$(mktemp -d "${TMPDIR:-/tmp}/ktls-stage1.XXXXXX")
trap 'rm -rf "$sys" "$init"' EXIT
mkdir -p "$init/bin" "$init/modules" "$init/proc" "$init/sys" "$init/dev" "$init/newroot"
cp "$(command -v busybox)" "$init/bin/busybox"
: > "$init/modules/order"
# want NAME: the module and, first, everything it needs (modules.dep lists
# every module's whole closure).
want() {
	local line dep name
	line=$(grep -E "/$1\.ko(\.[a-z]+)?:" "$dst/modules.dep") || {
		grep -qE "/$1\.ko" "$dst/modules.builtin" && return 0
		echo "module $1 not found" >&2
		exit 1
	}
	for dep in ${line#*:}; do
		want "$(basename "$dep" | sed 's/\.ko.*//')"
	done
	name=$(basename "${line%%:*}")
	grep -qx "$name" "$init/modules/order" || { cp "$dst/${line%%:*}" "$init/modules/"; echo "$name" >> "$init/modules/order"; }
}
# ext4 asks the crypto API for crc32c when it mounts, through a modprobe
# stage one does not have.
for m in virtio_pci virtio_blk crc32c_generic ext4; do want $m; done
cat > "$init/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t devtmpfs dev /dev
for m in $(/bin/busybox cat /modules/order); do /bin/busybox insmod /modules/$m; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do /bin/busybox sleep 0.1; i=$((i+1)); done
/bin/busybox mount -t ext4 -o rw /dev/vda /newroot || { echo "KTLSVM-CHECK mount-root FAIL"; /bin/busybox poweroff -f; }
/bin/busybox umount /proc
/bin/busybox mount --move /dev /newroot/dev
exec /bin/busybox switch_root /newroot /lib/systemd/systemd
EOF
chmod +x "$init/init"
(cd "$init" && find . | "$init/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1) > "$out/initrd.gz"

rm -f "$out/root.img"
mke2fs -q -t ext4 -L root -d "$sys" "$out/root.img" 1536M >&2
echo "$kver"
