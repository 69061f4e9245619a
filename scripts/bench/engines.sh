# shellcheck shell=bash
# The engines scripts/bench.sh compares. Each is a directory holding the
# same test data, where every workload runs:
#
#   native      the host tree itself, on the file system of BENCH_DIR
#   native-img  a copy of the host data on an ext4 loop image made the way
#               the kernel engine makes its upper (src/overlay/engine.rs),
#               because such an image can be much faster for metadata than
#               the root fs: the fair baseline for what lands in the upper
#   kernel      `wopfs mount --engine kernel` of a read_write_overlay grant
#               (overlayfs over the read-only FUSE view, upper on an image)
#   fuse        `wopfs mount --engine fuse` of a read_write_overlay grant
#   ro          `wopfs mount` of a read_only grant: the kernel engine's lower
#               on its own (read workloads only)
#
# Sourced by bench.sh, never run on its own.

known_engines=" native native-img kernel fuse ro "
declare -A grant_of=() pid_of=() granted_files_of=()

is_view() { [[ "$1" == kernel || "$1" == fuse || "$1" == ro ]]; }
can_write() { [[ "$1" != ro ]]; }

engine_dir() {
    case $1 in
        native) printf '%s\n' "$host" ;;
        native-img) printf '%s\n' "$work/img" ;;
        *) printf '%s\n' "$work/mnt-$1" ;;
    esac
}

wopfs() { timeout 600 "$wopfs_bin" --state-dir "$work/state" "$@"; }

json_field() { python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }

# The view engines' session dir (layer images, overlay journal, daemon log).
session_dir() { printf '%s\n' "$work/state/sessions/${grant_of[$1]}"; }

mount_view() {
    local engine=$1 mp out fstype
    local args=() extra=()
    mp=$(engine_dir "$engine")
    if can_write "$engine"; then
        args+=(--engine "$engine" --quota-bytes "$quota_bytes" --quota-files "$quota_files")
    fi
    read -r -a extra <<<"${BENCH_MOUNT_ARGS:-}"
    out=$(wopfs mount "${grant_of[$engine]}" "$mp" "${args[@]}" "${extra[@]}" --json) \
        || die "wopfs mount of the $engine engine failed (its log: $(session_dir "$engine")/daemon.log)"
    pid_of[$engine]=$(json_field pid <<<"$out")
    is_mounted "$mp" || die "wopfs mount returned but $mp is not mounted"
    # Never report one engine's numbers under another's name.
    fstype=$(fstype_at "$mp")
    case $engine:$fstype in
        kernel:overlay | fuse:fuse* | ro:fuse*) ;;
        kernel:*) die "the kernel engine was asked for, but $mp is a '$fstype' mount, not overlay: this wopfs has no kernel engine (or fell back); leave kernel out of BENCH_ENGINES" ;;
        *) die "the $engine engine's mount at $mp is a '$fstype' mount, not FUSE" ;;
    esac
}

unmount_view() {
    local mp
    mp=$(engine_dir "$1")
    is_mounted "$mp" || return 0
    wopfs umount "$mp" >/dev/null 2>&1 || umount -l "$mp"
}

# mkfs and mount options of the kernel engine's layer image (keep in step
# with create_image/mount_image in src/overlay/engine.rs), and its size for
# BYTES and FILES (image_bytes there).
# (Shell arithmetic: awk's %d stops at 2 GiB.)
image_size() {
    local s=$(($1 + $2 * 4096 + 16 * 1048576))
    printf '%s\n' "$(((s + 4095) / 4096 * 4096))"
}

setup_native_img() {
    local dir img bytes files
    dir=$(engine_dir native-img)
    img=$work/native-img.ext4
    bytes=$(du -sb "$host" | cut -f1)
    files=$(find "$host" | wc -l)
    bytes=$((bytes + quota_bytes))
    files=$((files + quota_files))
    truncate -s "$(image_size "$bytes" "$files")" "$img"
    mkfs.ext4 -q -F -m 0 -E nodiscard -J size=8 -N "$((files + 64))" "$img" \
        || die "mkfs.ext4 of $img failed (is e2fsprogs installed?)"
    mkdir -p "$dir"
    mount -t ext4 -o loop,nosuid,nodev "$img" "$dir" || die "cannot loop-mount $img at $dir"
    cp -a "$host/." "$dir/"
    rm -rf "$dir/lost+found"
    sync
}

setup_view() {
    local engine=$1 mode=read_write_overlay out mp native_n view_n
    [[ "$engine" == ro ]] && mode=read_only
    mp=$(engine_dir "$engine")
    mkdir -p "$mp"
    out=$(wopfs grant --root "$host" --mode "$mode" --purpose "wopfs benchmark ($engine)" --ttl 12h --json) \
        || die "wopfs grant for the $engine engine failed"
    grant_of[$engine]=$(json_field grant_id <<<"$out")
    granted_files_of[$engine]=$(python3 -c 'import json, sys; print(len(json.load(sys.stdin)["files"]))' <<<"$out")
    mount_view "$engine"
    # The comparison only means something if the view shows all the data.
    native_n=$(find "$host" | wc -l)
    view_n=$(find "$mp" | wc -l)
    ((native_n == view_n)) \
        || die "the $engine view shows $view_n entries, the host tree $native_n: check the grant/policy (max_files, denies)"
}

setup_engine() {
    case $1 in
        native) ;;
        native-img) setup_native_img ;;
        *) setup_view "$1" ;;
    esac
}

# Empty every cache in front of ENGINE's data. Not timed. A view is also
# remounted, so the kernel's FUSE attribute and entry caches start empty.
make_cold() {
    if is_view "$1"; then
        unmount_view "$1"
        mount_view "$1"
    fi
    drop_caches
}

# Where each engine's data and writes live, as a markdown table.
print_file_systems() {
    local e
    printf '| what | dir | mount | source, type | options |\n|---|---|---|---|---|\n'
    for e in "${engines[@]}"; do
        case $e in
            native) fs_row "native (the host tree)" "$host" ;;
            native-img) fs_row "native-img" "$(engine_dir native-img)" ;;
            kernel)
                fs_row "kernel: mountpoint" "$(engine_dir kernel)"
                fs_row "kernel: upper" "$(session_dir kernel)/kernel/layer/upper"
                ;;
            fuse) fs_row "fuse: overlay dir" "$(session_dir fuse)" ;;
            ro) fs_row "ro: mountpoint" "$(engine_dir ro)" ;;
        esac
    done
    if ! [[ " ${engines[*]} " == *" native "* ]]; then fs_row "host tree" "$host"; fi
}

# The daemon's memory for each view: right after a fresh mount, and after
# a find + stat of the whole view (every granted file looked up once).
print_rss() {
    local e dir idle walked n
    printf '| engine | granted files | daemon RSS after mount, MiB | after find + stat of the view, MiB | RSS bytes per granted file | growth by the walk, bytes per file |\n'
    printf '|---|---:|---:|---:|---:|---:|\n'
    for e in "${engines[@]}"; do
        is_view "$e" || continue
        dir=$(engine_dir "$e")
        make_cold "$e"
        idle=$(rss_kib "${pid_of[$e]}")
        find "$dir" -printf '%s\n' >/dev/null
        walked=$(rss_kib "${pid_of[$e]}")
        n=${granted_files_of[$e]}
        awk -v e="$e" -v n="$n" -v i="$idle" -v w="$walked" 'BEGIN {
            if (i !~ /^[0-9]+$/ || w !~ /^[0-9]+$/) { printf "| %s | %d | n/a | n/a | n/a (daemon gone) | n/a |\n", e, n; exit }
            printf "| %s | %d | %.1f | %.1f | %.0f | %.0f |\n", e, n, i / 1024, w / 1024,
                (n > 0 ? w * 1024 / n : 0), (n > 0 ? (w - i) * 1024 / n : 0) }'
    done
}
