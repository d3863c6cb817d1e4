#!/bin/sh
# Print the version of the source tree this script sits in (or of TREE):
#   packaging/version.sh [TREE]
#
# VERSION names the last release. A build of the commit tagged v<VERSION>,
# with nothing changed, is that release: 0.1.0. Any other build is a
# development build after it: <VERSION>+git<YYYYMMDD>.<hash>, with the
# commit's date (UTC) and abbreviated hash, and ".dirty" when the tracked
# files differ from the commit. dpkg sorts such a version above <VERSION>
# and below every later release (0.1.0 < 0.1.0+git20261204.4da0e98 < 0.1.1
# < 0.2.0), whether the hash starts with a digit or a letter, and two
# builds by their commit date. A release bumps VERSION (and CHANGELOG.md) and
# tags that commit v<VERSION>. Without git (a source tarball): VERSION.
set -eu

top=${1:-$(cd "$(dirname "$0")/.." && pwd)}
base=$(tr -d ' \n' <"$top/VERSION")
case $base in
[0-9]*) ;;
*) echo "version.sh: $top/VERSION must start with a digit, not \"$base\"" >&2; exit 1 ;;
esac

# The tree must be the top of its own repository, not a directory inside
# some other checkout.
if [ "$(git -C "$top" rev-parse --show-toplevel 2>/dev/null)" != "$(cd "$top" && pwd -P)" ]; then
	echo "$base"
	exit 0
fi
dirty=
if [ -n "$(git -C "$top" status --porcelain --untracked-files=no 2>/dev/null)" ]; then
	dirty=.dirty
fi
if [ -z "$dirty" ] && git -C "$top" describe --exact-match --tags --match "v$base" HEAD >/dev/null 2>&1; then
	echo "$base"
	exit 0
fi
date=$(TZ=UTC git -C "$top" log -1 --format=%cd --date=format-local:%Y%m%d HEAD)
hash=$(git -C "$top" rev-parse --short HEAD)
echo "$base+git$date.$hash$dirty"
