#!/usr/bin/env bash
# Cargo runner: runs the firmware ELF on QEMU mps2-an386 (Cortex-M4F) and decodes its defmt log.
#
#   qemu-run.sh FIRMWARE.elf [MODE ARGS...]
#
# MODE ARGS reach the firmware through semihosting (-append); with none, `demo` on the Fashion-MNIST
# test set. Environment:
#   FMNIST_MODEL     model file to load into the model region at 0x00020000 (-device loader).
#   FMNIST_DATA      folder with t10k-images-idx3-ubyte[.gz] and t10k-labels-idx1-ubyte[.gz]
#                    (default /usr/share/datasets/fashion-mnist); un-gzipped into target/ for demo.
#   QEMU_TIMEOUT     seconds before a hung firmware is killed (default 300).
#   DEFMT_PRINT      the decoder (default `defmt-print`; `cargo install defmt-print --locked`).
# The exit status is the firmware's: 0 success, 1 panic/HardFault, 2 model refused, 3 bad
# arguments or host I/O; 124 when the timeout killed QEMU.
set -euo pipefail

elf=$1
shift
here=$(cd "$(dirname "$0")" && pwd)
model_addr=0x00020000

if [ $# -eq 0 ]; then
    data=${FMNIST_DATA:-/usr/share/datasets/fashion-mnist}
    cache="$here/target/fashion-mnist"
    mkdir -p "$cache"
    for f in t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
        if [ ! -s "$cache/$f" ]; then
            if [ -f "$data/$f" ]; then
                cp "$data/$f" "$cache/$f"
            elif [ -f "$data/$f.gz" ]; then
                gzip -dc "$data/$f.gz" > "$cache/$f.tmp" && mv "$cache/$f.tmp" "$cache/$f"
            else
                echo "qemu-run.sh: no $f[.gz] in $data (set FMNIST_DATA)" >&2
                exit 3
            fi
        fi
    done
    set -- demo "$cache/t10k-images-idx3-ubyte" "$cache/t10k-labels-idx1-ubyte"
fi

loader=()
if [ -n "${FMNIST_MODEL:-}" ]; then
    loader=(-device "loader,file=$FMNIST_MODEL,addr=$model_addr")
fi

decoder=${DEFMT_PRINT:-defmt-print}
if ! command -v "$decoder" > /dev/null; then
    echo "qemu-run.sh: $decoder not found: cargo install defmt-print --locked" >&2
    exit 3
fi

set +e
timeout "${QEMU_TIMEOUT:-300}" qemu-system-arm \
    -machine mps2-an386 -cpu cortex-m4 \
    -display none -serial none -monitor none \
    -semihosting-config enable=on,target=native \
    -icount shift=0 \
    "${loader[@]}" \
    -kernel "$elf" -append "$*" \
    | "$decoder" -e "$elf"
status=("${PIPESTATUS[@]}")
set -e
exit "${status[0]}"
