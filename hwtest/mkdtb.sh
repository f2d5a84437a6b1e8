#!/bin/sh
# bed.dtb = the tree QEMU generates for the bed's machine + bed.dtsi.
# Usage: mkdtb.sh OUTDIR
set -eu
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$1
B=$OUT/dtb-board
mkdir -p "$B"
truncate -s 32K "$B/memory"
# shellcheck disable=SC2046
qemu-system-aarch64 $(sh "$HERE/qemu-args.sh" "$B") -serial null -serial null \
	-machine dumpdtb="$OUT/base.dtb" >/dev/null
dtc -q -I dtb -O dts -o "$OUT/base.dts" "$OUT/base.dtb"
{ cat "$OUT/base.dts"; cat "$HERE/bed.dtsi"; } > "$OUT/bed.dts"
dtc -q -I dts -O dtb -o "$OUT/bed.dtb" "$OUT/bed.dts"
echo "hwtest: $OUT/bed.dtb"
