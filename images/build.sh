#!/bin/bash
# Builds the trunkguard appliance image from Debian bookworm packages (docs/images.md).
#
#   sudo images/build.sh x86_64|aarch64 [--rebuild-base]      (arm64 = aarch64)
#
# Output in target/image-build/ARCH/out/:
#   vmlinuz, initrd.img   kernel and initramfs, for direct kernel boot (qemu -kernel/-initrd)
#   rootfs.raw            ext4 root filesystem (whole-disk, no partition table)
#   rootfs.qcow2          the same, compressed qcow2
#   disk.raw, disk.qcow2  bootable disk. x86_64: MBR + GRUB (BIOS) + the root filesystem as
#                         partition 1; aarch64: GPT + EFI system partition with GRUB
#                         (EFI/BOOT/BOOTAA64.EFI) + the root filesystem as partition 2
#   build-info.txt        versions, sizes and stage timings
#
# Environment:
#   TRUNKGUARD_BIN=PATH   use this binary instead of building one (x86_64: `cargo build
#                         --release --locked`; aarch64: a cross build in a Debian build root)
#   BUILDROOT_SUITE=...   Debian suite of the aarch64 cross build root (default sid)
#   MIRROR=URL            Debian mirror (default http://deb.debian.org/debian)
#   ROOT_PASSWORD=...     set a root password (development images only; default: root locked)
#   HEADROOM_MB=N         free space left in the root filesystem (default 64; it grows to the
#                         disk at boot, x-systemd.growfs)
#
# Needs root, debootstrap, e2fsprogs (mkfs.ext4 -d), qemu-utils (qemu-img), fdisk (sfdisk), xz-utils;
# for aarch64 also qemu-user-static (binfmt_misc), dosfstools and mtools, and cargo on the host
# (cargo vendor). No loop devices; /proc, /sys and /dev are mounted into the chroot while
# packages install and unmounted on exit.
set -euo pipefail

ARCH=${1:-}
shift || true
REBUILD_BASE=0
for arg in "$@"; do
    case $arg in
        --rebuild-base) REBUILD_BASE=1 ;;
        *) echo "unknown argument: $arg" >&2; exit 2 ;;
    esac
done
case $ARCH in
    x86_64) DEB_ARCH=amd64; KERNEL_PKG=linux-image-amd64; BOOT_PKG=grub-pc-bin; RUST_TARGET= ;;
    aarch64|arm64) ARCH=aarch64; DEB_ARCH=arm64; KERNEL_PKG=linux-image-arm64; BOOT_PKG=grub-efi-arm64-bin
        RUST_TARGET=aarch64-unknown-linux-gnu; GNU_TRIPLET=aarch64-linux-gnu ;;
    *) echo "usage: $0 x86_64|aarch64 [--rebuild-base]" >&2; exit 2 ;;
esac

REPO=$(cd "$(dirname "$0")/.." && pwd)
SUITE=bookworm
MIRROR=${MIRROR:-http://deb.debian.org/debian}
IMAGE_BUILD=$REPO/target/image-build
WORK=$IMAGE_BUILD/$ARCH
BUILDROOT_SUITE=${BUILDROOT_SUITE:-sid}
BUILDROOT=$IMAGE_BUILD/buildroot-$BUILDROOT_SUITE
BASE=$WORK/base
ROOT=$WORK/rootfs
OUT=$WORK/out
HEADROOM_MB=${HEADROOM_MB:-64}
LABEL=tg-root

# debootstrap installs these (from $SUITE); the rest comes from apt inside the chroot so that
# bookworm-updates and bookworm-security are applied.
BOOTSTRAP_PKGS=systemd-sysv,udev,kmod,zstd,ca-certificates,iproute2,libopus0
CHROOT_PKGS="$KERNEL_PKG initramfs-tools systemd-resolved systemd-timesyncd $BOOT_PKG"
# Kernel module directories a headless SIP/RTP box never loads (they are ~40% of the kernel).
PRUNE_MODULES="sound drivers/media drivers/gpu drivers/net/wireless net/wireless net/mac80211
  net/bluetooth drivers/bluetooth drivers/infiniband drivers/staging drivers/iio drivers/isdn
  drivers/input/joystick drivers/input/tablet drivers/input/touchscreen"

log() { printf '\n== %s: %s\n' "$(date +%T)" "$*"; }
die() { echo "build.sh: $*" >&2; exit 1; }
declare -A STAGE_S
stage_start() { STAGE=$1; STAGE_T0=$SECONDS; log "$1"; }
stage_end() { STAGE_S[$STAGE]=$((SECONDS - STAGE_T0)); }

[[ $(id -u) == 0 ]] || die "run as root (debootstrap, chroot, file ownership)"
for tool in debootstrap mkfs.ext4 qemu-img sfdisk xz chroot; do
    command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y debootstrap e2fsprogs qemu-utils fdisk xz-utils)"
done

# A foreign architecture's packages are configured (and its binary checked) under qemu-user:
# the kernel must hand the target's ELF files to qemu-$ARCH through binfmt_misc, with the F flag
# (interpreter opened at registration, so it works inside a chroot).
FOREIGN=0
[[ $DEB_ARCH == "$(dpkg --print-architecture)" ]] || FOREIGN=1
ensure_binfmt() {
    local binfmt=/proc/sys/fs/binfmt_misc conf=/usr/lib/binfmt.d/qemu-$ARCH.conf
    [[ -e $binfmt/register ]] || mount -t binfmt_misc binfmt_misc "$binfmt" \
        || die "cannot mount binfmt_misc (needed to run $ARCH programs under qemu-user)"
    if [[ ! -e $binfmt/qemu-$ARCH ]]; then
        [[ -f $conf ]] || die "no $conf (apt-get install -y qemu-user-static binfmt-support)"
        cat "$conf" >"$binfmt/register" || die "cannot register $conf with binfmt_misc"
    fi
    grep -q '^enabled' "$binfmt/qemu-$ARCH" || die "binfmt_misc qemu-$ARCH is disabled"
    grep -q '^flags:.*F' "$binfmt/qemu-$ARCH" || die "binfmt_misc qemu-$ARCH lacks the F flag (chroots cannot use it)"
}
[[ $FOREIGN == 0 ]] || ensure_binfmt

MOUNTED=()
cleanup() {
    local i
    for ((i = ${#MOUNTED[@]} - 1; i >= 0; i--)); do umount -l "${MOUNTED[$i]}" 2>/dev/null || true; done
    MOUNTED=()
}
trap cleanup EXIT
chroot_mounts() {
    local r=$1
    mount -t proc proc "$r/proc" && MOUNTED+=("$r/proc")
    mount -t sysfs sysfs "$r/sys" && MOUNTED+=("$r/sys")
    mount --bind /dev "$r/dev" && MOUNTED+=("$r/dev")
}
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 "$@"; }
in_base() { chroot "$BASE" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"; }

T0=$SECONDS
mkdir -p "$WORK/debs" "$OUT"

# Cross builds (aarch64): a Debian build root of the host's architecture with Debian's Rust, the
# target's standard library and a cross C toolchain, cached like the base. Its rustc must be at
# least the highest rust-version in Cargo.lock (rusqlite 0.43 needs 1.89; trixie has 1.85, so sid).
in_buildroot() { chroot "$BUILDROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C.UTF-8 HOME=/root DEBIAN_FRONTEND=noninteractive "$@"; }
cross_buildroot() {
    local pkgs="rustc cargo libstd-rust-dev:$DEB_ARCH gcc-$GNU_TRIPLET libc6-dev:$DEB_ARCH libopus-dev:$DEB_ARCH pkgconf"
    local key
    key=$(printf '%s\n' "$BUILDROOT_SUITE" "$MIRROR" "$pkgs" | sha256sum | cut -c1-16)
    if [[ -f $BUILDROOT/.trunkguard-buildroot && $(cat "$BUILDROOT/.trunkguard-buildroot") == "$key" ]]; then
        echo "reusing $BUILDROOT (key $key)"
        return
    fi
    rm -rf "$BUILDROOT"
    mkdir -p "$IMAGE_BUILD/debs-buildroot"
    debootstrap --variant=minbase --cache-dir="$IMAGE_BUILD/debs-buildroot" \
        "$BUILDROOT_SUITE" "$BUILDROOT" "$MIRROR"
    echo 'APT::Install-Recommends "false";' >"$BUILDROOT/etc/apt/apt.conf.d/90trunkguard-norecommends"
    # sid's Release file expires within days; a mirror or proxy that lags must not stop the build
    # (the packages are still checked against the signed Release file).
    echo 'Acquire::Check-Valid-Until "false";' >"$BUILDROOT/etc/apt/apt.conf.d/90trunkguard-validuntil"
    chroot_mounts "$BUILDROOT"
    in_buildroot dpkg --add-architecture "$DEB_ARCH"
    in_buildroot apt-get update -q
    # shellcheck disable=SC2086
    in_buildroot apt-get -y -q install $pkgs
    in_buildroot apt-get -y -q clean
    cleanup
    echo "$key" >"$BUILDROOT/.trunkguard-buildroot"
}
# The repository (read-only) and `cargo vendor`'s copy of the crates are bind-mounted into the
# build root; the build never reaches the network. Output in
# target/image-build/cargo-target/$RUST_TARGET/release/.
cross_build() {
    local vendor=$IMAGE_BUILD/vendor ctarget=$IMAGE_BUILD/cargo-target
    mkdir -p "$ctarget"
    cross_buildroot
    # cargo vendor copies every crate of the lock file, for every target (the host build never
    # downloads the other platforms' crates): fetch them first.
    (cd "$REPO" && cargo fetch --locked --quiet && cargo vendor --locked --offline --quiet "$vendor" >/dev/null) \
        || die "cargo fetch/vendor failed (cargo on PATH and crates.io reachable?)"
    mkdir -p "$BUILDROOT/src" "$BUILDROOT/vendor" "$BUILDROOT/cargo-target" "$BUILDROOT/cargo-home"
    printf '%s\n' '[source.crates-io]' 'replace-with = "vendored-sources"' \
        '[source.vendored-sources]' 'directory = "/vendor"' \
        "[target.$RUST_TARGET]" "linker = \"$GNU_TRIPLET-gcc\"" >"$BUILDROOT/cargo-home/config.toml"
    chroot_mounts "$BUILDROOT"
    mount --bind "$REPO" "$BUILDROOT/src" && MOUNTED+=("$BUILDROOT/src")
    mount -o remount,ro,bind "$BUILDROOT/src"
    mount --bind "$vendor" "$BUILDROOT/vendor" && MOUNTED+=("$BUILDROOT/vendor")
    mount -o remount,ro,bind "$BUILDROOT/vendor"
    mount --bind "$ctarget" "$BUILDROOT/cargo-target" && MOUNTED+=("$BUILDROOT/cargo-target")
    in_buildroot rustc --version
    local target_env=${RUST_TARGET//-/_}
    in_buildroot CARGO_HOME=/cargo-home CARGO_TARGET_DIR=/cargo-target \
        "CC_$target_env=$GNU_TRIPLET-gcc" "AR_$target_env=$GNU_TRIPLET-ar" \
        PKG_CONFIG_ALLOW_CROSS=1 "PKG_CONFIG_LIBDIR=/usr/lib/$GNU_TRIPLET/pkgconfig:/usr/share/pkgconfig" \
        nice cargo build --release --locked --offline --target "$RUST_TARGET" --manifest-path /src/Cargo.toml
    cleanup
    BIN=$ctarget/$RUST_TARGET/release/trunkguard
}

# --- 1. the release binary -----------------------------------------------------------------
stage_start binary
if [[ -n ${TRUNKGUARD_BIN:-} ]]; then
    BIN=$TRUNKGUARD_BIN
elif [[ -n $RUST_TARGET ]]; then
    cross_build
else
    (cd "$REPO" && nice cargo build --release --locked)
    BIN=$REPO/target/release/trunkguard
fi
[[ -x $BIN ]] || die "no binary at $BIN"
# trunkguard-update is built with it (same cargo build); TRUNKGUARD_UPDATE_BIN overrides.
UPDATE_BIN=${TRUNKGUARD_UPDATE_BIN:-$(dirname "$BIN")/trunkguard-update}
[[ -x $UPDATE_BIN ]] || die "no trunkguard-update at $UPDATE_BIN (set TRUNKGUARD_UPDATE_BIN)"
stage_end

# --- 2. the Debian base (cached: rebuilt when the package lists change) ---------------------
BASE_KEY=$(printf '%s\n' "$SUITE" "$MIRROR" "$BOOTSTRAP_PKGS" "$CHROOT_PKGS" "$PRUNE_MODULES" \
    | sha256sum | cut -c1-16)
stage_start base
if [[ $REBUILD_BASE == 1 || ! -f $BASE/.trunkguard-base || $(cat "$BASE/.trunkguard-base") != "$BASE_KEY" ]]; then
    rm -rf "$BASE"
    if [[ $FOREIGN == 1 ]]; then
        # Unpack on the host, configure under qemu-user (binfmt_misc, set up above).
        debootstrap --variant=minbase --arch="$DEB_ARCH" --cache-dir="$WORK/debs" --foreign \
            --include="$BOOTSTRAP_PKGS" "$SUITE" "$BASE" "$MIRROR"
        chroot "$BASE" /debootstrap/debootstrap --second-stage
    else
        debootstrap --variant=minbase --arch="$DEB_ARCH" --cache-dir="$WORK/debs" \
            --include="$BOOTSTRAP_PKGS" "$SUITE" "$BASE" "$MIRROR"
    fi
    cat >"$BASE/etc/apt/sources.list" <<EOF
deb $MIRROR $SUITE main
deb $MIRROR $SUITE-updates main
deb http://security.debian.org/debian-security $SUITE-security main
EOF
    # No recommends, no documentation/man pages/translations (copyright files stay).
    echo 'APT::Install-Recommends "false";' >"$BASE/etc/apt/apt.conf.d/90trunkguard-norecommends"
    cat >"$BASE/etc/dpkg/dpkg.cfg.d/90trunkguard-nodoc" <<'EOF'
path-exclude=/usr/share/doc/*
path-include=/usr/share/doc/*/copyright
path-exclude=/usr/share/man/*
path-exclude=/usr/share/info/*
path-exclude=/usr/share/locale/*
path-include=/usr/share/locale/locale.alias
path-exclude=/usr/share/lintian/*
EOF
    printf '#!/bin/sh\nexit 101\n' >"$BASE/usr/sbin/policy-rc.d"
    chmod 755 "$BASE/usr/sbin/policy-rc.d"
    # The kernel's initramfs hook reads these; the box boots from a disk it has never seen.
    echo 'do_symlinks = yes' >"$BASE/etc/kernel-img.conf"
    chroot_mounts "$BASE"
    in_base apt-get update -q
    if [[ $FOREIGN == 1 ]]; then
        # Emulated mkinitramfs takes many minutes and package installs would run it twice; the
        # initramfs is made once, below, after the modules are pruned.
        in_base dpkg-divert --local --rename --divert /usr/sbin/update-initramfs.trunkguard \
            --add /usr/sbin/update-initramfs
        printf '#!/bin/sh\nexit 0\n' >"$BASE/usr/sbin/update-initramfs"
        chmod 755 "$BASE/usr/sbin/update-initramfs"
    fi
    in_base apt-get -y -q dist-upgrade
    # shellcheck disable=SC2086
    in_base apt-get -y -q install $CHROOT_PKGS
    in_base apt-get -y -q clean
    if [[ $FOREIGN == 1 ]]; then
        rm -f "$BASE/usr/sbin/update-initramfs"
        in_base dpkg-divert --local --rename --remove /usr/sbin/update-initramfs
    fi
    cleanup
    rm -f "$BASE/usr/sbin/policy-rc.d"
    rm -rf "$BASE"/var/lib/apt/lists/* "$BASE"/var/cache/apt/*.bin "$BASE"/var/cache/apt/archives/*.deb
    find "$BASE/usr/share/doc" -mindepth 1 ! -name copyright ! -type d -delete
    find "$BASE/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$BASE"/usr/share/man/* "$BASE"/usr/share/info/* "$BASE"/usr/share/lintian
    find "$BASE/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    # Kernel modules: drop what a headless SIP/RTP box never loads, compress the rest (kmod
    # loads .ko.xz), then refresh the module index and the initramfs.
    for kdir in "$BASE"/usr/lib/modules/*/; do
        kver=$(basename "$kdir")
        for m in $PRUNE_MODULES; do rm -rf "$kdir/kernel/$m"; done
        find "$kdir" -name '*.ko' -print0 | xargs -0 -r -P "$(nproc)" -n 64 xz --check=crc32 -T1 -q
        in_base depmod -a "$kver"
        chroot_mounts "$BASE"
        if [[ -e $BASE/boot/initrd.img-$kver ]]; then
            in_base update-initramfs -u -k "$kver"
        else
            in_base update-initramfs -c -k "$kver"
            in_base linux-update-symlinks install "$kver" "/boot/vmlinuz-$kver"
        fi
        cleanup
    done
    echo "$BASE_KEY" >"$BASE/.trunkguard-base"
else
    echo "reusing $BASE (key $BASE_KEY; --rebuild-base to redo)"
fi
stage_end

# --- 3. the trunkguard root filesystem -------------------------------------------------------
stage_start rootfs
rm -rf "$ROOT"
cp -a "$BASE" "$ROOT"
rm -f "$ROOT/.trunkguard-base"
if [[ $ARCH == aarch64 ]]; then
    # Device trees (26 MiB): the image boots through UEFI + GRUB (or QEMU's direct boot), and
    # UEFI firmware hands the kernel its own ACPI tables or device tree; grub.cfg loads none.
    rm -rf "$ROOT"/usr/lib/linux-image-*/
fi
echo trunkguard >"$ROOT/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\ttrunkguard\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$ROOT/etc/hosts"
printf 'LABEL=%s\t/\text4\tdefaults,noatime,x-systemd.growfs\t0\t1\n' "$LABEL" >"$ROOT/etc/fstab"
# Every copy of the image gets its own machine id on first boot.
: >"$ROOT/etc/machine-id"
rm -f "$ROOT/var/lib/dbus/machine-id"
ln -sf ../run/systemd/resolve/stub-resolv.conf "$ROOT/etc/resolv.conf"
# network-online.target: one configured link is enough, and a box without a cable still boots
# (trunkguard starts after at most 30 s).
mkdir -p "$ROOT/etc/systemd/system/systemd-networkd-wait-online.service.d"
cat >"$ROOT/etc/systemd/system/systemd-networkd-wait-online.service.d/trunkguard.conf" <<'EOF'
[Service]
ExecStart=
ExecStart=/lib/systemd/systemd-networkd-wait-online --any --timeout=30
EOF

# The software lives in two A/B slots (docs/updates.md): the first version goes into slot a
# as an update bundle would put it, made and unpacked by the image's own trunkguard-update
# (inside the root: under qemu-user for a foreign architecture). /usr/bin/trunkguard and the
# prompts point through /opt/trunkguard/current; the updater itself stays outside the slots.
install -D -m 0755 "$UPDATE_BIN" "$ROOT/usr/bin/trunkguard-update"
STAGE_DIR=$ROOT/tmp/tg-initial
rm -rf "$STAGE_DIR" && mkdir -p "$STAGE_DIR"
install -m 0755 "$BIN" "$STAGE_DIR/trunkguard"
cp -a "$REPO/firmware" "$STAGE_DIR/firmware"
TG_VERSION=$(sed -n 's/^version = "\(.*\)"/\1/p' "$REPO/Cargo.toml" | head -n1)
in_root /usr/bin/trunkguard-update bundle --out /tmp/tg-initial/initial.tgu --binary /tmp/tg-initial/trunkguard \
    --firmware /tmp/tg-initial/firmware --version "$TG_VERSION" --arch "$ARCH"
in_root /usr/bin/trunkguard-update init /tmp/tg-initial/initial.tgu --root / --arch "$ARCH" --force
rm -rf "$STAGE_DIR"
ln -sfn /opt/trunkguard/current/bin/trunkguard "$ROOT/usr/bin/trunkguard"
install -D -m 0644 "$REPO/firmware/systemd/trunkguard.service" "$ROOT/etc/systemd/system/trunkguard.service"
install -m 0644 "$REPO/firmware/systemd/trunkguard-update-confirm.service" \
    "$REPO/firmware/systemd/trunkguard-first-boot.service" "$ROOT/etc/systemd/system/"
install -D -m 0644 "$REPO/firmware/sysctl.d/90-trunkguard.conf" "$ROOT/etc/sysctl.d/90-trunkguard.conf"
install -D -m 0644 "$REPO/firmware/journald.conf.d/trunkguard.conf" "$ROOT/etc/systemd/journald.conf.d/trunkguard.conf"
install -d -m 0755 "$ROOT/usr/share/trunkguard"
ln -sfn /opt/trunkguard/current/share/prompts "$ROOT/usr/share/trunkguard/prompts"
install -D -m 0644 "$REPO/README.md" "$ROOT/usr/share/doc/trunkguard/README.md"
install -m 0644 "$REPO/docs/config.md" "$REPO/docs/install.md" "$REPO/docs/updates.md" "$ROOT/usr/share/doc/trunkguard/"
install -m 0644 "$REPO/firmware/etc/trunkguard/trunkguard.toml" "$ROOT/usr/share/doc/trunkguard/trunkguard.toml.example"
cp -a "$REPO/images/overlay/." "$ROOT/"
chown -R root:root "$ROOT/etc/systemd" "$ROOT/usr/libexec/trunkguard"

in_root useradd --system --user-group --home-dir /var/lib/trunkguard --no-create-home \
    --shell /usr/sbin/nologin --comment "trunkguard appliance" trunkguard
TG_GID=$(in_root id -g trunkguard)  # numeric: the host does not know the image's groups
# 0755 is the unit's ConfigurationDirectoryMode; the file itself is readable by trunkguard only.
install -d -m 0755 -o 0 -g 0 "$ROOT/etc/trunkguard"
install -m 0640 -o 0 -g "$TG_GID" "$REPO/images/config/trunkguard.toml" "$ROOT/etc/trunkguard/trunkguard.toml"
in_root systemctl enable systemd-networkd.service systemd-resolved.service systemd-timesyncd.service \
    trunkguard.service trunkguard-console-status.service trunkguard-update-confirm.service \
    trunkguard-first-boot.service
if [[ -n ${ROOT_PASSWORD:-} ]]; then
    echo "root:$ROOT_PASSWORD" | in_root chpasswd
    echo "WARNING: root password set (development image)"
else
    in_root passwd -l root >/dev/null
fi

# The binary must find every library inside the image, and accept the image's configuration.
if in_root ldd /usr/bin/trunkguard | grep -q 'not found'; then
    in_root ldd /usr/bin/trunkguard
    die "trunkguard needs libraries the image lacks"
fi
in_root /usr/bin/trunkguard check-config /etc/trunkguard/trunkguard.toml
stage_end

# --- 4. images ----------------------------------------------------------------------------------
# GRUB for the bootable disk: a core image with everything built in (no /boot/grub modules
# needed), reading /boot/grub/grub.cfg, which boots Debian's /vmlinuz and /initrd.img symlinks
# (kept current by kernel upgrades).
grub_bios_prepare() {
    mkdir -p "$ROOT/boot/grub"
    cat >"$ROOT/boot/grub/grub.cfg" <<EOF
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout=1
menuentry "trunkguard" {
    search --no-floppy --label --set=root $LABEL
    linux /vmlinuz root=LABEL=$LABEL ro console=tty0 console=ttyS0,115200n8 quiet
    initrd /initrd.img
}
EOF
    in_root grub-mkimage -O i386-pc -o /tmp/core.img -p '(hd0,msdos1)/boot/grub' \
        biosdisk part_msdos ext2 search search_label normal linux configfile serial terminal echo test
    mv "$ROOT/tmp/core.img" "$WORK/core.img"
    cp "$ROOT/usr/lib/grub/i386-pc/boot.img" "$WORK/boot.img"
}
# Bootable BIOS disk: 1 MiB for the MBR and GRUB's core image, then the root filesystem.
grub_bios_disk() {
    local core_sectors
    core_sectors=$(( ($(stat -c %s "$WORK/core.img") + 511) / 512 ))
    (( core_sectors < 2047 )) || die "GRUB core image too large for the 1 MiB gap"
    rm -f "$OUT/disk.raw"
    truncate -s $(( (FS_MB + 1) * 1024 * 1024 )) "$OUT/disk.raw"
    echo 'label: dos
start=2048, type=83, bootable' | sfdisk -q "$OUT/disk.raw"
    dd if="$WORK/boot.img" of="$OUT/disk.raw" bs=440 count=1 conv=notrunc status=none
    dd if="$WORK/core.img" of="$OUT/disk.raw" bs=512 seek=1 conv=notrunc status=none
    dd if="$OUT/rootfs.raw" of="$OUT/disk.raw" bs=1M seek=1 conv=notrunc,sparse status=none
}
# UEFI (arm64): GRUB as the removable-media loader EFI/BOOT/BOOTAA64.EFI, every module built in;
# its embedded config finds the root filesystem by label and reads /boot/grub/grub.cfg there.
# The console is the firmware's (serial on a headless box) and ttyAMA0 for the kernel.
ESP_MB=32
grub_efi_prepare() {
    mkdir -p "$ROOT/boot/grub"
    cat >"$ROOT/boot/grub/grub.cfg" <<EOF
set timeout=1
menuentry "trunkguard" {
    search --no-floppy --label --set=root $LABEL
    linux /vmlinuz root=LABEL=$LABEL ro console=tty0 console=ttyAMA0,115200n8 quiet
    initrd /initrd.img
}
EOF
    printf '%s\n' "search --no-floppy --label --set=root $LABEL" 'set prefix=($root)/boot/grub' \
        >"$ROOT/tmp/early.cfg"
    in_root grub-mkimage -O arm64-efi -o /tmp/BOOTAA64.EFI -c /tmp/early.cfg -p /boot/grub \
        part_gpt part_msdos fat ext2 gzio search search_label normal linux configfile echo test efi_gop
    mv "$ROOT/tmp/BOOTAA64.EFI" "$WORK/BOOTAA64.EFI"
    rm -f "$ROOT/tmp/early.cfg"
}
# GPT: an EFI system partition (FAT, mtools: no mounts) then the root filesystem; 1 MiB at the end
# for the backup GPT.
grub_efi_disk() {
    command -v mkfs.fat >/dev/null && command -v mcopy >/dev/null \
        || die "mkfs.fat/mcopy not found (apt-get install -y dosfstools mtools)"
    rm -f "$WORK/esp.img" "$OUT/disk.raw"
    mkfs.fat -F 16 -n TG-ESP -C "$WORK/esp.img" $((ESP_MB * 1024)) >/dev/null
    mmd -i "$WORK/esp.img" ::/EFI ::/EFI/BOOT
    mcopy -i "$WORK/esp.img" "$WORK/BOOTAA64.EFI" ::/EFI/BOOT/BOOTAA64.EFI
    truncate -s $(( (1 + ESP_MB + FS_MB + 1) * 1024 * 1024 )) "$OUT/disk.raw"
    printf '%s\n' 'label: gpt' \
        "start=2048, size=$((ESP_MB * 2048)), type=C12A7328-F81F-11D2-BA4B-00A0C93EC3B8, name=ESP" \
        "start=$(( (1 + ESP_MB) * 2048 )), size=$((FS_MB * 2048)), type=B921B045-1DF0-41C3-AF44-4C6F280D3FAE, name=root" \
        | sfdisk -q "$OUT/disk.raw"
    dd if="$WORK/esp.img" of="$OUT/disk.raw" bs=1M seek=1 conv=notrunc status=none
    dd if="$OUT/rootfs.raw" of="$OUT/disk.raw" bs=1M seek=$((1 + ESP_MB)) conv=notrunc,sparse status=none
}

stage_start images
KVER=$(basename "$(ls -d "$ROOT"/usr/lib/modules/* | sort -V | tail -1)")
cp "$ROOT/boot/vmlinuz-$KVER" "$OUT/vmlinuz"
cp "$ROOT/boot/initrd.img-$KVER" "$OUT/initrd.img"
case $ARCH in
    x86_64) grub_bios_prepare ;;
    aarch64) grub_efi_prepare ;;
esac
# The GRUB files are not needed on the running box.
in_root env DEBIAN_FRONTEND=noninteractive apt-get -y -q purge --autoremove "$BOOT_PKG" grub-common 2>&1 \
    | grep -v 'Can not write log' >/dev/null || true

USED_MB=$(du -sm --apparent-size "$ROOT" | cut -f1)
FS_MB=$(( (USED_MB * 115 / 100 + HEADROOM_MB + 15) / 16 * 16 ))
rm -f "$OUT/rootfs.raw"
mkfs.ext4 -q -F -L "$LABEL" -m 1 -b 4096 -E lazy_itable_init=0,lazy_journal_init=0 \
    -d "$ROOT" "$OUT/rootfs.raw" "${FS_MB}M"
case $ARCH in
    x86_64) grub_bios_disk ;;
    aarch64) grub_efi_disk ;;
esac
rm -f "$OUT/rootfs.qcow2" "$OUT/disk.qcow2"
qemu-img convert -c -O qcow2 "$OUT/rootfs.raw" "$OUT/rootfs.qcow2"
qemu-img convert -c -O qcow2 "$OUT/disk.raw" "$OUT/disk.qcow2"
stage_end

# --- 5. report ------------------------------------------------------------------------------------
mb() { echo "$(( $(stat -c %s "$1") / 1024 / 1024 )) MiB"; }
{
    echo "built: $(date -u +%FT%TZ)"
    echo "git: $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)"
    if [[ $FOREIGN == 1 ]]; then
        echo "trunkguard: $(in_root /usr/bin/trunkguard --version 2>/dev/null || echo unknown) ($BIN)"
    else
        echo "trunkguard: $("$BIN" --version 2>/dev/null || echo unknown) ($BIN)"
    fi
    echo "debian: $SUITE $(cat "$ROOT/etc/debian_version"), kernel $KVER"
    echo "root content: ${USED_MB} MiB; filesystem ${FS_MB} MiB (grows to the disk at boot)"
    echo "rootfs.raw: $(mb "$OUT/rootfs.raw"), allocated $(du -m "$OUT/rootfs.raw" | cut -f1) MiB"
    echo "rootfs.qcow2: $(mb "$OUT/rootfs.qcow2")"
    echo "disk.raw: $(mb "$OUT/disk.raw"); disk.qcow2: $(mb "$OUT/disk.qcow2")"
    for s in binary base rootfs images; do echo "stage $s: ${STAGE_S[$s]} s"; done
    echo "total: $((SECONDS - T0)) s"
} | tee "$OUT/build-info.txt"
