#!/bin/sh
# Build the Debian package from the source tree this script sits in:
#   packaging/build-deb.sh [OUTDIR [VERSION]]
# OUTDIR defaults to the top of the tree; VERSION to what
# packaging/version.sh says (as the Makefile does): the release in the file
# VERSION, or a development build after it, <VERSION>+git<date>.<hash>.
# The Go toolchain is taken from PATH. Prints the path of the .deb it made.
set -eu

top=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$top}
ver=${2:-$(sh "$top/packaging/version.sh" "$top")}
ver=${ver#v}
# A native package's version starts with a digit and has no "-".
case $ver in
[0-9]*) ;;
*) echo "build-deb: version \"$ver\" must start with a digit" >&2; exit 1 ;;
esac
case $ver in
*-*) echo "build-deb: version \"$ver\" has a \"-\", which a native package's may not" >&2; exit 1 ;;
esac
dpkg --validate-version "$ver" || { echo "build-deb: dpkg refuses version \"$ver\"" >&2; exit 1; }
commit=$(git -C "$top" rev-parse HEAD 2>/dev/null || echo unknown)

command -v go >/dev/null || { echo "build-deb: no go on PATH" >&2; exit 1; }
command -v dpkg-buildpackage >/dev/null || { echo "build-deb: dpkg-buildpackage missing (apt-get install debhelper dpkg-dev)" >&2; exit 1; }

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
src="$work/rsync-ssl-shim-$ver"
mkdir -p "$src"

# The tracked and new files of the tree, not build output or old packages.
if git -C "$top" rev-parse --git-dir >/dev/null 2>&1; then
	(cd "$top" && git ls-files -z --cached --others --exclude-standard) |
		(cd "$top" && xargs -0 sh -c 'for f; do [ -e "$f" ] && printf "%s\0" "$f"; done' sh) |
		(cd "$top" && tar -c --null --no-recursion -T -) | tar -x -C "$src"
else
	(cd "$top" && tar -c --exclude=./.git --exclude='*.deb' .) | tar -x -C "$src"
fi
rm -rf "$src/debian"
cp -a "$top/packaging/debian" "$src/debian"
# debian/rules builds it into the binary, for "rsync-ssl-shim version".
echo "$commit" >"$src/debian/commit"

date=$(git -C "$top" log -1 --format=%aD 2>/dev/null || date -R)
cat >"$src/debian/changelog" <<CHANGELOG
rsync-ssl-shim ($ver) unstable; urgency=medium

  * Built from the rsync-ssl-shim source tree, commit
    $commit.
    What changed in each release: /usr/share/doc/rsync-ssl-shim/CHANGELOG.md.

 -- rsync-ssl-shim maintainers <maintainers@rsync-ssl-shim.invalid>  $date
CHANGELOG

# Reuse the caller's Go caches: the build must not fetch modules again.
GOCACHE=$(go env GOCACHE) GOMODCACHE=$(go env GOMODCACHE) GOFLAGS=-mod=mod
export GOCACHE GOMODCACHE GOFLAGS
(cd "$src" && dpkg-buildpackage -b -us -uc >"$work/build.log" 2>&1) || {
	tail -n 60 "$work/build.log" >&2
	exit 1
}
arch=$(dpkg-architecture -qDEB_HOST_ARCH)
deb="rsync-ssl-shim_${ver}_${arch}.deb"
mkdir -p "$out"
cp "$work/$deb" "$out/$deb"
echo "$out/$deb"
