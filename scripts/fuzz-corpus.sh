#!/bin/sh
# fuzz-corpus.sh copies what fuzzing found interesting into the targets'
# committed corpora:
#
#   scripts/fuzz-corpus.sh MAXBYTES MAXFILES pkg:FuzzName...
#
# go test -fuzz keeps every input that reached new coverage in its cache
# ($GOCACHE/fuzz/<import path>/<FuzzName>), not in the repository. This
# copies them to <pkg>/testdata/fuzz/<FuzzName>, newest first, until the
# directory holds MAXBYTES or MAXFILES files, so the committed corpus
# stays small and `make check` replays it in seconds. Newest first: a
# campaign's late finds are the inputs that reached the deepest states
# (built on the earlier ones); the smallest are mostly the shallow first
# steps, which the seeds and the earlier finds cover. An input too large
# for what is left is skipped. Inputs already there (same name: the name
# is a hash of the content) are skipped.
set -eu
maxbytes=$1
maxfiles=$2
shift 2
go=${GO:-go}
cache=$($go env GOCACHE)/fuzz

for t in "$@"; do
	pkg=${t%%:*}
	fn=${t##*:}
	src=$cache/$($go list "$pkg")/$fn
	dst=$pkg/testdata/fuzz/$fn
	[ -d "$src" ] || { echo "$fn: no cached corpus"; continue; }
	mkdir -p "$dst"
	bytes=$(cat "$dst"/* 2>/dev/null | wc -c)
	files=$(ls "$dst" | wc -l)
	added=0
	# ls -t: newest first.
	for f in $(ls -t "$src"); do
		[ "$files" -lt "$maxfiles" ] || break
		[ -e "$dst/$f" ] && continue
		size=$(wc -c <"$src/$f")
		[ $((bytes + size)) -le "$maxbytes" ] || continue
		cp "$src/$f" "$dst/$f"
		bytes=$((bytes + size))
		files=$((files + 1))
		added=$((added + 1))
	done
	echo "$fn: $added added from $(ls "$src" | wc -l) cached; $files files, $bytes bytes in $dst"
done
