#!/bin/sh
# build.sh CACHE SHIM OLD_RSYNC FILES OUT
# Builds the kernel TLS test VM: Debian's own kernel (the image package is
# fetched once into CACHE with apt-get download) and an initramfs holding
# busybox, the static rsync-ssl-shim SHIM, this machine's rsync, openssl,
# socat and bash with their shared libraries, the older rsync unpacked at
# OLD_RSYNC, the files in FILES (certificates) under /etc/ktls, the TLS
# modules, init and scenario.sh. Writes OUT/vmlinuz and OUT/initrd.gz.
set -eu
cache=$1 shim=$2 old=$3 files=$4 out=$5
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$cache" "$out"

# The kernel Debian's linux-image-amd64 points at now.
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

root=$(mktemp -d "${TMPDIR:-/tmp}/ktls-initramfs.XXXXXX")
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/bin" "$root/usr/bin" "$root/etc/ktls" "$root/modules" "$root/opt/rsync327" \
	"$root/proc" "$root/sys" "$root/dev" "$root/tmp" "$root/srv" "$root/usr/lib/ssl"
cp "$(command -v busybox)" "$root/bin/busybox"
kmods="$cache/$pkg/lib/modules/$kver/kernel"
for m in crypto/seqiv crypto/gf128mul crypto/ghash-generic crypto/ctr crypto/gcm crypto/cryptd \
	crypto/crypto_simd arch/x86/crypto/aesni-intel net/tls/tls; do
	cp "$kmods/$m.ko" "$root/modules/"
done

# A program and every library ldd names, at the same paths.
withlibs() {
	mkdir -p "$root$(dirname "$2")"
	cp "$1" "$root$2"
	ldd "$1" | awk '/=> \// {print $3} /^\t\/lib/ {print $1}' | while read -r lib; do
		mkdir -p "$root$(dirname "$lib")"
		[ -e "$root$lib" ] || cp -L "$lib" "$root$lib"
	done
}
withlibs "$(command -v rsync)" /usr/bin/rsync
withlibs "$(command -v openssl)" /usr/bin/openssl
withlibs "$(command -v socat)" /usr/bin/socat
withlibs "$(command -v bash)" /bin/bash
withlibs "$old/usr/bin/rsync" /opt/rsync327/rsync
cp "$(command -v rsync-ssl)" "$root/usr/bin/rsync-ssl"
cp "$shim" "$root/usr/bin/rsync-ssl-shim"
[ -f /usr/lib/ssl/openssl.cnf ] && cp -L /usr/lib/ssl/openssl.cnf "$root/usr/lib/ssl/"
cp "$files"/* "$root/etc/ktls/"
printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' > "$root/etc/passwd"
printf 'root:x:0:\nnogroup:x:65534:\n' > "$root/etc/group"
printf '127.0.0.1 localhost\n' > "$root/etc/hosts"
printf 'hosts: files\npasswd: files\ngroup: files\n' > "$root/etc/nsswitch.conf"
cp "$here/init" "$root/init"
cp "$here/scenario.sh" "$root/scenario.sh"
chmod +x "$root/init"
(cd "$root" && find . | "$root/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1) > "$out/initrd.gz"
echo "$kver"
