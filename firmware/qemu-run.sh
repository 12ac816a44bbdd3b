#!/usr/bin/env bash
# Cargo runner: runs the firmware ELF on QEMU (default mps2-an386, Cortex-M4F) and decodes its
# defmt log.
#
#   qemu-run.sh [--machine MACHINE] FIRMWARE.elf [MODE ARGS...]
#
# MACHINE (set per target in .cargo/config.toml; QEMU_MACHINE overrides it, e.g. mps2-an500 to
# run the thumbv7em ELF on a Cortex-M7): microbit (M0), mps2-an385 (M3), mps2-an386 (M4F),
# mps2-an500 (M7), mps2-an505 (M33).
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

machine=mps2-an386
if [ "${1:-}" = --machine ]; then
    machine=$2
    shift 2
fi
machine=${QEMU_MACHINE:-$machine}
case $machine in
    microbit)   cpu=cortex-m0;  model_addr=0x00010000 ;;
    mps2-an385) cpu=cortex-m3;  model_addr=0x00020000 ;;
    mps2-an386) cpu=cortex-m4;  model_addr=0x00020000 ;;
    mps2-an500) cpu=cortex-m7;  model_addr=0x00020000 ;;
    mps2-an505) cpu=cortex-m33; model_addr=0x10020000 ;;
    *) echo "qemu-run.sh: unknown machine $machine" >&2; exit 3 ;;
esac
elf=$1
shift
here=$(cd "$(dirname "$0")" && pwd)

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
    -machine "$machine" -cpu "$cpu" \
    -display none -serial none -monitor none \
    -semihosting-config enable=on,target=native \
    -icount shift=0 \
    "${loader[@]}" \
    -kernel "$elf" -append "$*" \
    | "$decoder" -e "$elf"
status=("${PIPESTATUS[@]}")
set -e
exit "${status[0]}"
