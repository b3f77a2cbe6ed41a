#!/usr/bin/env bash
# The demo until the server, updater and emulated device land: Tern and
# mender-artifact read and verify each other's signed artifacts.
set -euo pipefail
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cd "$work"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "A signing key (ECDSA P-256, SEC1 PEM) and a 64 MiB root filesystem image"
openssl ecparam -name prime256v1 -genkey -noout -out signing.key
openssl ec -in signing.key -pubout -out signing.pub 2>/dev/null
head -c 32M /dev/urandom > rootfs.ext4
head -c 32M /dev/zero >> rootfs.ext4

step "tern-artifact writes a signed rootfs-image artifact"
tern-artifact write rootfs-image -f rootfs.ext4 -n release-2 -t qemu-arm64 \
    -k signing.key -o release-2.mender
ls -l release-2.mender

step "mender-artifact validates it with the public key"
mender-artifact validate -k signing.pub release-2.mender

step "mender-artifact writes an update-module artifact; Tern signs it, validates and reads it"
printf '/opt/app\n' > dest_dir
printf 'hello.txt\n' > filename
printf 'hello from Tern\n' > hello.txt
mender-artifact write module-image -T single-file -f dest_dir -f filename -f hello.txt \
    -n app-1.0 -t qemu-arm64 -o app-1.0.mender >/dev/null
tern-artifact sign -k signing.key app-1.0.mender
tern-artifact validate -k signing.pub app-1.0.mender
mender-artifact validate -k signing.pub app-1.0.mender
tern-artifact read -k signing.pub app-1.0.mender

step "A flipped payload byte is refused by both"
python3 - <<'PY'
data = bytearray(open("release-2.mender", "rb").read())
data[len(data) // 2] ^= 0x01
open("damaged.mender", "wb").write(bytes(data))
PY
tern-artifact validate -k signing.pub damaged.mender || echo "tern-artifact refused it (exit $?)"
mender-artifact validate -k signing.pub damaged.mender >/dev/null 2>&1 \
    || echo "mender-artifact refused it too (exit $?)"
