# shellcheck shell=bash
# Helpers of scripts/bench.sh: messages, numbers, mounts and caches.
# Sourced by bench.sh, never run on its own.

die() { printf 'bench: %s\n' "$*" >&2; exit 1; }
note() { printf 'bench: %s\n' "$*" >&2; }

# A positive whole number from env var NAME (default DEFAULT), or a clear error.
count_var() {
    local name=$1 default=$2 value
    value=${!name:-$default}
    [[ "$value" =~ ^[0-9]+$ ]] || die "$name must be a whole number, not '$value'"
    printf '%s\n' "$((10#$value))"
}

# DEFAULT times $scale, rounded, at least 1.
scaled() { awk -v d="$1" -v s="$scale" 'BEGIN { v = int(d * s + 0.5); print (v < 1 ? 1 : v) }'; }

elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.4f\n", b - a }'; }
median() { sort -g | awk '{ v[NR] = $1 } END { if (NR) print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# A / B as "1.23x"; "n/a" unless both are times.
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        if (a ~ /^[0-9.]+$/ && b ~ /^[0-9.]+$/ && b > 0) printf "%.2fx\n", a / b; else print "n/a" }'
}

# True if $1 is a mount point (reads /proc/mounts; never touches the mount).
is_mounted() { awk -v m="$1" '$2 == m { found = 1 } END { exit !found }' /proc/mounts; }

# The file system type mounted at $1 (the topmost one).
fstype_at() { awk -v m="$1" '$2 == m { t = $3 } END { print t }' /proc/mounts; }

# Every mount point beneath $1, deepest first.
mounts_under() { awk -v p="$1/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r; }

drop_caches() {
    "$can_drop_caches" || return 0
    sync
    echo 3 >/proc/sys/vm/drop_caches
}

# One markdown row about the file system holding DIR (findmnt -T): the
# mount it is on, its device and type, and its options.
fs_row() {
    local label=$1 dir=$2
    if [[ ! -e "$dir" ]]; then
        # shellcheck disable=SC2016 # the backquotes are markdown
        printf '| %s | `%s` | (missing) | | |\n' "$label" "$dir"
        return
    fi
    # shellcheck disable=SC2016
    printf '| %s | `%s` | %s | %s | `%s` |\n' "$label" "$dir" \
        "$(findmnt -no TARGET -T "$dir")" \
        "$(findmnt -no SOURCE,FSTYPE -T "$dir" | tr -s ' ')" \
        "$(findmnt -no OPTIONS -T "$dir")"
}

# VmRSS of PID in KiB, or "n/a" once it is gone.
rss_kib() {
    local kib
    kib=$(awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null) || kib=""
    printf '%s\n' "${kib:-n/a}"
}
