#!/usr/bin/env bash
# build-guest.sh — builds Prewarm guest images: a Debian cloud kernel (ELF vmlinux, booted
# through PVH) and an initramfs with static busybox, the virtio modules and the function runner.
#
#   build-guest.sh base [--cache DIR] [--kernel-deb FILE]
#       Builds the base (or finds it in the cache): vmlinux, base.cpio.gz, base.json.
#   build-guest.sh function NAME (--static TEXT | --command CMD) [--content-type TYPE]
#                  [--cache DIR] [--out DIR] [--kernel-deb FILE]
#       Builds a function image: vmlinux, initramfs.cpio.gz (base + per-function overlay),
#       overlay.cpio.gz, image.json. With --out, the image's files are also placed in DIR.
#
# Prints the result directory (one line) on stdout; logs and step timings go to stderr.
# Results are cached under DIR/guest/ (DIR: --cache, else $PREWARM_CACHE_DIR, else
# ${XDG_CACHE_HOME:-$HOME/.cache}/prewarm), keyed by a sha256 of the inputs: the base by the
# kernel .deb, the busybox binary and this builder with its runner files; a function by the
# base key and its handler. Entries appear by an atomic rename and are never half-written.
# The kernel package is the one linux-image-cloud-amd64 depends on (apt-cache); --kernel-deb
# uses a given linux-image-*.deb instead. See README.md next to this script.
set -euo pipefail
export LC_ALL=C

PROG=build-guest.sh
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SELF="$HERE/build-guest.sh"
RUNNER_DIR="$HERE/runner"
RUNNER_FILES=(init handler identity serve.c)
METAPKG=linux-image-cloud-amd64
MODULES=(
    drivers/virtio/virtio_ring
    drivers/virtio/virtio
    drivers/virtio/virtio_mmio
    net/core/failover
    drivers/net/net_failover
    drivers/net/virtio_net
)
CMDLINE="console=ttyS0 reboot=t panic=-1 quiet tsc=reliable"
HTTP_PORT=8080

log() { printf '%s: %s\n' "$PROG" "$*" >&2; }
die() {
    printf '%s: error: %s\n' "$PROG" "$*" >&2
    exit 1
}
usage() {
    sed -n '2,21p' "$SELF" | sed 's/^# \{0,1\}//' >&2
    exit "${1:-2}"
}

# --- timing ---------------------------------------------------------------------------------
now_us() { local t=${EPOCHREALTIME/./}; echo "$((10#$t))"; }
T_START=$(now_us)
STEP_NAME=
STEP_T0=0
step() { STEP_NAME=$1; STEP_T0=$(now_us); }
step_done() {
    local t1
    t1=$(now_us)
    log "$(printf 'step %-26s %8.3f s' "$STEP_NAME" "$(awk -v d=$((t1 - STEP_T0)) 'BEGIN{print d/1e6}')")"
}
total_done() {
    local t1
    t1=$(now_us)
    log "$(printf 'total %-25s %8.3f s' "$1" "$(awk -v d=$((t1 - T_START)) 'BEGIN{print d/1e6}')")"
}

# --- helpers --------------------------------------------------------------------------------
need() {
    local c
    for c in "$@"; do
        command -v "$c" >/dev/null 2>&1 || die "'$c' not found (apt-get install $(pkg_of "$c"))"
    done
}
pkg_of() {
    case $1 in
    apt-get | apt-cache) echo apt ;;
    dpkg | dpkg-deb) echo dpkg ;;
    lz4) echo lz4 ;;
    cpio) echo cpio ;;
    readelf) echo binutils ;;
    flock) echo util-linux ;;
    busybox) echo busybox-static ;;
    iconv) echo libc-bin ;;
    *) echo coreutils ;;
    esac
}
sha_of() { sha256sum "$1" | awk '{print $1}'; }

# JSON string literal of $1 (UTF-8 in, escapes for quote, backslash and control characters).
json_str() {
    local s=$1 out='' c i
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\n'/\\n}
    s=${s//$'\r'/\\r}
    s=${s//$'\t'/\\t}
    if [[ $s == *[$'\x01'-$'\x1f']* ]]; then
        for ((i = 0; i < ${#s}; i++)); do
            c=${s:i:1}
            if [[ $c == [$'\x01'-$'\x1f'] ]]; then
                out+=$(printf '\\u%04x' "'$c")
            else
                out+=$c
            fi
        done
        s=$out
    fi
    printf '"%s"' "$s"
}

# newc archive of the tree under $1 (owner root, mtimes 0, sorted), gzip'd to $2.
pack_cpio() {
    local root=$1 out=$2
    find "$root" -mindepth 1 -exec touch -h -d @0 {} +
    (cd "$root" && find . -mindepth 1 | sort | cpio -o -H newc -R 0:0 --reproducible --quiet) |
        gzip -9 -n >"$out"
}

# Takes the lock file $1 (fd in LOCK_FD); waits up to 15 minutes.
take_lock() {
    exec {LOCK_FD}>"$1"
    flock -w 900 "$LOCK_FD" || die "timed out waiting for the build lock $1"
}
release_lock() {
    exec {LOCK_FD}>&-
}

TMP_DIRS=()
cleanup() {
    local d
    for d in "${TMP_DIRS[@]}"; do
        [ -n "$d" ] && rm -rf -- "$d"
    done
    return 0
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- arguments ------------------------------------------------------------------------------
[ $# -ge 1 ] || usage
MODE=$1
shift
case $MODE in
base | function) ;;
-h | --help) usage 0 ;;
*) die "unknown mode '$MODE' (base or function; try --help)" ;;
esac

FN_NAME=
if [ "$MODE" = function ]; then
    [ $# -ge 1 ] || die "function: missing NAME"
    FN_NAME=$1
    shift
fi
CACHE_ROOT=${PREWARM_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/prewarm}
OUT_DIR=
KERNEL_DEB=
FN_KIND=
FN_CONTENT=
FN_CTYPE=text/plain
while [ $# -gt 0 ]; do
    case $1 in
    --cache)
        [ $# -ge 2 ] || die "--cache needs a directory"
        CACHE_ROOT=$2
        shift 2
        ;;
    --kernel-deb)
        [ $# -ge 2 ] || die "--kernel-deb needs a file"
        KERNEL_DEB=$2
        shift 2
        ;;
    --out | --static | --command | --content-type)
        [ "$MODE" = function ] || die "$1 is only for 'function'"
        [ $# -ge 2 ] || die "$1 needs a value"
        case $1 in
        --out) OUT_DIR=$2 ;;
        --content-type) FN_CTYPE=$2 ;;
        --static | --command)
            [ -z "$FN_KIND" ] || die "give one of --static and --command"
            FN_KIND=${1#--}
            FN_CONTENT=$2
            ;;
        esac
        shift 2
        ;;
    -h | --help) usage 0 ;;
    *) die "unknown argument '$1' (try --help)" ;;
    esac
done

if [ "$MODE" = function ]; then
    [[ $FN_NAME =~ ^[A-Za-z0-9._-]{1,63}$ ]] ||
        die "function name must be 1-63 characters of [A-Za-z0-9._-]: '$FN_NAME'"
    [ -n "$FN_KIND" ] || die "function: give --static TEXT or --command CMD"
    [ "$FN_KIND" = static ] || [ -n "$FN_CONTENT" ] || die "--command needs a non-empty command"
    [[ $FN_CTYPE =~ ^[!-~]+(\ ?[!-~]+)*$ ]] || die "bad --content-type '$FN_CTYPE'"
fi

need sha256sum awk sed find sort cpio gzip touch flock readelf od dd lz4 dpkg dpkg-deb busybox iconv cc
mkdir -p "$CACHE_ROOT/guest" || die "cannot create cache directory $CACHE_ROOT/guest"
CACHE_ROOT=$(cd "$CACHE_ROOT" && pwd)
GUEST_CACHE=$CACHE_ROOT/guest

# --- the kernel package ---------------------------------------------------------------------
apt_updated=0
apt_update() {
    [ $apt_updated = 0 ] || return 1
    apt_updated=1
    log "apt lists missing or stale: running apt-get update"
    apt-get update -qq >&2 || die "apt-get update failed"
}

# Sets KPKG, KVER_DEB, KSHA, KFILE from the metapackage's dependency. apt-cache keeps its
# package cache in ours (apt rebuilds it when the lists change): without one it parses every
# list on each call.
APT_CACHE_OPTS=()
resolve_kernel() {
    need apt-cache apt-get
    mkdir -p "$GUEST_CACHE/apt"
    APT_CACHE_OPTS=(-o "Dir::Cache::pkgcache=$GUEST_CACHE/apt/pkgcache.bin" -o "Dir::Cache::srcpkgcache=")
    local show
    while :; do
        KPKG=$(apt-cache "${APT_CACHE_OPTS[@]}" depends "$METAPKG" 2>/dev/null |
            awk '/Depends: linux-image-/{print $2; exit}') || true
        if [ -n "$KPKG" ]; then
            show=$(apt-cache "${APT_CACHE_OPTS[@]}" show --no-all-versions "$KPKG" 2>/dev/null) || show=
            KVER_DEB=$(awk '/^Version:/{print $2; exit}' <<<"$show")
            KSHA=$(awk '/^SHA256:/{print $2; exit}' <<<"$show")
            KFILE=$(awk '/^Filename:/{print $2; exit}' <<<"$show")
            KFILE=${KFILE##*/}
            [ -n "$KVER_DEB" ] && [ -n "$KSHA" ] && [ -n "$KFILE" ] && return 0
        fi
        apt_update || die "cannot resolve the kernel package from $METAPKG (apt-cache depends)"
    done
}

# Sets DEB to a verified copy of the kernel package in the cache.
fetch_kernel() {
    local debs=$GUEST_CACHE/debs dl f
    mkdir -p "$debs"
    DEB=$debs/$KFILE
    if [ -f "$DEB" ] && [ "$(sha_of "$DEB")" = "$KSHA" ]; then
        log "kernel package $KPKG $KVER_DEB: cached"
        return 0
    fi
    # Downloads that a killed builder left behind.
    find "$GUEST_CACHE" -maxdepth 1 -name '.tmp-dl-*' -mmin +60 -exec rm -rf {} + 2>/dev/null || true
    dl=$(mktemp -d "$GUEST_CACHE/.tmp-dl-XXXXXX")
    TMP_DIRS+=("$dl")
    log "downloading $KPKG=$KVER_DEB"
    if ! (cd "$dl" && apt-get download -q "$KPKG=$KVER_DEB" >&2 2>"$dl/.err"); then
        if apt_update; then
            resolve_kernel
            (cd "$dl" && apt-get download -q "$KPKG=$KVER_DEB" >&2 2>"$dl/.err") ||
                die "apt-get download $KPKG=$KVER_DEB failed: $(grep -v '^W:' "$dl/.err" | tail -3)"
        else
            die "apt-get download $KPKG=$KVER_DEB failed: $(grep -v '^W:' "$dl/.err" | tail -3)"
        fi
    fi
    f=$(find "$dl" -maxdepth 1 -name '*.deb' | head -1)
    [ -n "$f" ] || die "apt-get download left no .deb"
    [ "$(sha_of "$f")" = "$KSHA" ] || die "$f: sha256 does not match the archive's ($KSHA)"
    DEB=$debs/$KFILE
    mv -f "$f" "$DEB"
}

# --- the base -------------------------------------------------------------------------------
BASE_KEY=
BASE_DIR=

# Extracts the ELF vmlinux from the bzImage $1 into $2.
extract_vmlinux() {
    local bz=$1 out=$2 ss po pl off magic
    ss=$(od -An -tu1 -j $((0x1f1)) -N1 "$bz" | tr -d ' ')
    po=$(od -An -tu4 -j $((0x248)) -N4 "$bz" | tr -d ' ')
    pl=$(od -An -tu4 -j $((0x24c)) -N4 "$bz" | tr -d ' ')
    if [ -z "$ss" ] || [ -z "$po" ] || [ -z "$pl" ]; then
        die "$bz: cannot read the bzImage header"
    fi
    [ "$ss" = 0 ] && ss=4
    off=$(((ss + 1) * 512 + po))
    magic=$(od -An -tx1 -j "$off" -N4 "$bz" | tr -d ' \n')
    [ "$magic" = 02214c18 ] ||
        die "$bz: payload at $off is not legacy LZ4 (magic $magic); unsupported kernel compression"
    # The payload's last 4 bytes are the uncompressed size, which lz4 cannot decode.
    dd if="$bz" iflag=skip_bytes,count_bytes skip="$off" count=$((pl - 4)) bs=4M status=none |
        lz4 -dc >"$out" ||
        die "$bz: lz4 decompression failed"
    [ "$(od -An -tx1 -N4 "$out" | tr -d ' \n')" = 7f454c46 ] || die "vmlinux is not an ELF file"
    # PVH entry point: an ELF note of owner Xen, type 0x12 (XEN_ELFNOTE_PHYS32_ENTRY).
    readelf -n "$out" 2>/dev/null | awk '$1 == "Xen" && /\(0x00000012\)/ {f = 1} END {exit !f}' ||
        die "vmlinux has no PVH entry note (Xen, type 0x12); cannot boot it with -kernel through PVH"
}

build_base() {
    local bb bb_sha deb_sha f tmp root kroot kver m name src lst
    step "resolve kernel package"
    if [ -n "$KERNEL_DEB" ]; then
        [ -f "$KERNEL_DEB" ] || die "--kernel-deb: no such file: $KERNEL_DEB"
        DEB=$(cd "$(dirname "$KERNEL_DEB")" && pwd)/$(basename "$KERNEL_DEB")
        KPKG=$(dpkg-deb -f "$DEB" Package) || die "$DEB is not a .deb"
        KVER_DEB=$(dpkg-deb -f "$DEB" Version)
        step_done
    else
        resolve_kernel
        step_done
        step "fetch kernel package"
        fetch_kernel
        step_done
    fi

    step "hash inputs"
    bb=$(command -v busybox)
    bb=$(readlink -f "$bb")
    if readelf -l "$bb" 2>/dev/null | grep -q 'Requesting program interpreter'; then
        die "$bb is dynamically linked: apt-get install busybox-static"
    fi
    deb_sha=$(sha_of "$DEB")
    bb_sha=$(sha_of "$bb")
    BASE_KEY=$(
        {
            echo "prewarm-guest-base 1"
            echo "kernel-deb $deb_sha"
            echo "busybox $bb_sha"
            echo "file build-guest.sh $(sha_of "$SELF")"
            echo "cc $(cc -dumpmachine) $(cc --version | head -1)"
            for f in "${RUNNER_FILES[@]}"; do
                [ -f "$RUNNER_DIR/$f" ] || die "missing runner file $RUNNER_DIR/$f"
                echo "file runner/$f $(sha_of "$RUNNER_DIR/$f")"
            done
        } | sha256sum | awk '{print $1}'
    )
    BASE_DIR=$GUEST_CACHE/$BASE_KEY
    step_done

    if [ -f "$BASE_DIR/base.json" ]; then
        log "base $BASE_KEY: cache hit"
        return 0
    fi
    take_lock "$GUEST_CACHE/.lock-$BASE_KEY"
    if [ -f "$BASE_DIR/base.json" ]; then
        release_lock
        log "base $BASE_KEY: built meanwhile by another builder"
        return 0
    fi
    log "base $BASE_KEY: building ($KPKG $KVER_DEB)"
    # Whoever left these held the lock and is gone.
    rm -rf "$GUEST_CACHE/.tmp-$BASE_KEY-"*
    tmp=$(mktemp -d "$GUEST_CACHE/.tmp-$BASE_KEY-XXXXXX")
    TMP_DIRS+=("$tmp")
    root=$tmp/root
    kroot=$tmp/kpkg
    mkdir -p "$tmp/out" "$root" "$kroot"

    step "unpack kernel package"
    dpkg -x "$DEB" "$kroot" || die "dpkg -x $DEB failed"
    kver=$(ls "$kroot/lib/modules")
    if [ -z "$kver" ] || [ "$(wc -l <<<"$kver")" != 1 ]; then
        die "expected one lib/modules/<version> in $DEB"
    fi
    [ -f "$kroot/boot/vmlinuz-$kver" ] || die "no boot/vmlinuz-$kver in $DEB"
    step_done

    step "extract vmlinux"
    extract_vmlinux "$kroot/boot/vmlinuz-$kver" "$tmp/out/vmlinux"
    step_done

    step "initramfs tree"
    mkdir -p "$root"/{bin,sbin,usr/bin,usr/sbin,dev,proc,sys,run,tmp,etc,prewarm,lib/modules/"$kver"}
    chmod 1777 "$root/tmp"
    for m in "${MODULES[@]}"; do
        name=${m##*/}
        src=$kroot/lib/modules/$kver/kernel/$m
        if [ -f "$src.ko" ]; then
            cp "$src.ko" "$root/lib/modules/$kver/$name.ko"
        elif [ -f "$src.ko.xz" ]; then
            need xz
            xz -dc "$src.ko.xz" >"$root/lib/modules/$kver/$name.ko"
        elif [ -f "$src.ko.zst" ]; then
            need zstd
            zstd -qdc "$src.ko.zst" >"$root/lib/modules/$kver/$name.ko"
        elif grep -qs "/$name.ko\$" "$kroot/lib/modules/$kver/modules.builtin"; then
            log "module $name is built into the kernel"
        else
            die "module $m not found in $DEB"
        fi
    done
    cp "$bb" "$root/bin/busybox"
    chmod 755 "$root/bin/busybox"
    # Applet links from the binary's own list; never `busybox --install` (it writes to /bin).
    lst=$("$bb" --list-full) || die "$bb --list-full failed"
    while IFS= read -r f; do
        if [ -z "$f" ] || [ "$f" = bin/busybox ]; then
            continue
        fi
        [[ $f =~ ^[a-z0-9/._\[-]+$ && $f != *..* && $f != /* ]] || die "odd applet path '$f'"
        [[ $f != */* || -d $root/${f%/*} ]] || mkdir -p "$root/${f%/*}"
        ln -sf /bin/busybox "$root/$f"
    done <<<"$lst"
    [ -L "$root/bin/sh" ] || die "busybox has no sh applet"
    cc -static -Os -s -Wall -Wextra -Werror -o "$root/prewarm/serve" "$RUNNER_DIR/serve.c" ||
        die "cannot build the guest's listener statically (apt-get install gcc libc6-dev)"
    if readelf -l "$root/prewarm/serve" | grep -q 'Requesting program interpreter'; then
        die "the guest's listener is not static"
    fi
    cp "$RUNNER_DIR/init" "$root/init"
    cp "$RUNNER_DIR/handler" "$RUNNER_DIR/identity" "$root/prewarm/"
    chmod 755 "$root/init" "$root/prewarm/handler" "$root/prewarm/identity" "$root/prewarm/serve"
    printf 'root:x:0:0:root:/:/bin/sh\n' >"$root/etc/passwd"
    printf 'root:x:0:\n' >"$root/etc/group"
    step_done

    step "pack base.cpio.gz"
    pack_cpio "$root" "$tmp/out/base.cpio.gz"
    step_done

    cat >"$tmp/out/base.json" <<EOF
{"hash":"$BASE_KEY","kernel":"vmlinux","initrd":"base.cpio.gz","kernel_version":"$kver","kernel_package":"$KPKG","kernel_package_version":"$KVER_DEB","kernel_deb_sha256":"$deb_sha","busybox_sha256":"$bb_sha","cmdline":"$CMDLINE","http_port":$HTTP_PORT}
EOF
    chmod 644 "$tmp/out/"*
    rm -rf "$BASE_DIR" # an incomplete entry left by hand
    mv -T "$tmp/out" "$BASE_DIR" || die "cannot move the base into $BASE_DIR"
    release_lock
    log "base $BASE_KEY: built"
}

# --- a function image -----------------------------------------------------------------------
build_function() {
    local key dir tmp root text_json h kver f
    step "function key"
    if [ "$FN_KIND" = static ] || [ "$FN_KIND" = command ]; then
        iconv -f UTF-8 -t UTF-8 <<<"$FN_CONTENT" >/dev/null 2>&1 ||
            die "--$FN_KIND: the text is not valid UTF-8"
    fi
    key=$(
        {
            echo "prewarm-guest-function 1"
            echo "base $BASE_KEY"
            printf 'name %s\n' "$FN_NAME"
            printf 'kind %s\n' "$FN_KIND"
            printf 'content-type %s\n' "$FN_CTYPE"
            printf 'content %d\n%s' "${#FN_CONTENT}" "$FN_CONTENT"
        } | sha256sum | awk '{print $1}'
    )
    dir=$GUEST_CACHE/fn/$key
    mkdir -p "$GUEST_CACHE/fn"
    step_done

    if [ -f "$dir/image.json" ]; then
        log "function $FN_NAME $key: cache hit"
    else
        take_lock "$GUEST_CACHE/fn/.lock-$key"
        if [ -f "$dir/image.json" ]; then
            log "function $FN_NAME $key: built meanwhile by another builder"
        else
            step "function image"
            rm -rf "$GUEST_CACHE/fn/.tmp-$key-"*
            tmp=$(mktemp -d "$GUEST_CACHE/fn/.tmp-$key-XXXXXX")
            TMP_DIRS+=("$tmp")
            root=$tmp/root
            mkdir -p "$root/fn" "$tmp/out"
            printf '%s\n' "$FN_NAME" >"$root/fn/name"
            printf '%s\n' "$FN_KIND" >"$root/fn/kind"
            printf '%s\n' "$FN_CTYPE" >"$root/fn/content_type"
            if [ "$FN_KIND" = static ]; then
                printf '%s' "$FN_CONTENT" >"$root/fn/static"
                text_json="\"text\":$(json_str "$FN_CONTENT")"
            else
                printf '%s\n' "$FN_CONTENT" >"$root/fn/command"
                text_json="\"command\":$(json_str "$FN_CONTENT")"
            fi
            chmod 644 "$root/fn/"*
            pack_cpio "$root" "$tmp/out/overlay.cpio.gz"
            # The kernel unpacks concatenated gzip'd newc archives in order.
            cat "$BASE_DIR/base.cpio.gz" "$tmp/out/overlay.cpio.gz" >"$tmp/out/initramfs.cpio.gz"
            ln "$BASE_DIR/vmlinux" "$tmp/out/vmlinux" 2>/dev/null || cp "$BASE_DIR/vmlinux" "$tmp/out/vmlinux"
            kver=$(sed -n 's/.*"kernel_version":"\([^"]*\)".*/\1/p' "$BASE_DIR/base.json")
            h="{\"kind\":\"$FN_KIND\",$text_json,\"content_type\":$(json_str "$FN_CTYPE")}"
            cat >"$tmp/out/image.json" <<EOF
{"name":"$FN_NAME","kernel":"vmlinux","initrd":"initramfs.cpio.gz","handler":$h,"base_hash":"$BASE_KEY","hash":"$key","kernel_version":"$kver","ready_line":$(json_str "PREWARM-READY $FN_NAME"),"http_port":$HTTP_PORT,"cmdline":"$CMDLINE"}
EOF
            chmod 644 "$tmp/out/"*
            rm -rf "$dir"
            mv -T "$tmp/out" "$dir" || die "cannot move the image into $dir"
            step_done
            log "function $FN_NAME $key: built"
        fi
        release_lock
    fi

    if [ -z "$OUT_DIR" ]; then
        RESULT=$dir
        return 0
    fi
    step "place image in --out"
    mkdir -p "$OUT_DIR" || die "cannot create $OUT_DIR"
    OUT_DIR=$(cd "$OUT_DIR" && pwd)
    for f in vmlinux initramfs.cpio.gz image.json; do
        rm -f "$OUT_DIR/.$f.new"
        ln "$dir/$f" "$OUT_DIR/.$f.new" 2>/dev/null || cp "$dir/$f" "$OUT_DIR/.$f.new"
        mv -f "$OUT_DIR/.$f.new" "$OUT_DIR/$f"
    done
    step_done
    RESULT=$OUT_DIR
}

RESULT=
build_base
if [ "$MODE" = base ]; then
    RESULT=$BASE_DIR
else
    build_function
fi
total_done "$MODE${FN_NAME:+ $FN_NAME}"
printf '%s\n' "$RESULT"
