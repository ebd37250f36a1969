# Brings a Raspberry Pi's FAT firmware partition (label FIRMWARE) in line
# with a system's firmware directory (config.system.build.piFirmware, linked
# at <system>/pi-firmware), without mounting it: mtools reads and writes the
# partition's block device (or an image file) directly.
#
#   firmware-sync [--device DEV] [--dry-run | --check] DIR
#
# Sync (the default): compares every file of DIR with the partition's, then,
# only if something differs: checks the space first (refuses, changing
# nothing, when the partition cannot hold the new files beside the old ones
# plus the .bak copies); fsyncs the device; writes every differing file and
# a copy of the current config.txt and of the U-Boot binaries it names
# (`kernel=`, as <name>.bak) into a staging folder on the partition; fsyncs;
# moves them into place with one `mmove` per folder; then config.txt the
# same way, last; fsyncs again. Until that last move the firmware reads the
# old config.txt, and every file it names is there, complete. Files that DIR
# no longer has are kept: config.txt.bak may name them.
#
# --check: changes nothing; prints `differs=PATH` / `missing=PATH` per file
# of DIR that the partition does not hold as DIR has it, `version=KEY=VALUE`
# from the partition's pi-nixos-firmware.txt and `files=N`; exit 0 when it
# matches, 1 when not. --dry-run: prints what a sync would do.
#
# Exit codes: 0 done (or matches), 1 differs (--check), 2 error, 3 not
# enough space (nothing changed), 4 the partition is mounted.
#
# PI_FIRMWARE_SYNC_STOP_AFTER=N kills the program (SIGKILL, no cleanup)
# right after its Nth write, as a power cut would: the tests use it to prove
# that the partition boots after an interruption at every step.

set -euo pipefail
export MTOOLS_SKIP_CHECK=1

dev=/dev/disk/by-label/FIRMWARE
mode=sync
dir=

die() {
  echo "error: $1" >&2
  exit "${2:-2}"
}
say() { echo "firmware-sync: $*"; }

while [ $# -gt 0 ]; do
  case $1 in
  --device)
    [ $# -ge 2 ] || die "--device needs a path (a block device or an image file)"
    dev=$2
    shift 2
    ;;
  --check) mode=check && shift ;;
  --dry-run) mode=dry-run && shift ;;
  -h | --help)
    sed -n '/^# Brings/,/^$/s/^# \{0,1\}//p' "$0"
    exit 0
    ;;
  -*) die "unknown option $1: see --help" ;;
  *)
    [ -z "$dir" ] || die "one firmware directory only, not also $1"
    dir=$1
    shift
    ;;
  esac
done
[ -n "$dir" ] || die "name the firmware directory to sync from (e.g. /run/current-system/pi-firmware)"
[ -d "$dir" ] || die "$dir is not a directory: name a system's pi-firmware directory"
[ -e "$dev" ] || die "$dev does not exist: the card's FAT partition must carry the label FIRMWARE (fatlabel /dev/<partition> FIRMWARE sets it)"
if [ -b "$dev" ]; then
  real=$(readlink -f "$dev")
  while read -r src at _; do
    if [ "$src" = "$real" ]; then
      die "$dev ($real) is mounted at $at: writing it behind the kernel's FAT driver would corrupt it; unmount it (umount $at) and run again" 4
    fi
  done </proc/mounts
fi

# Every write counts as a step (see PI_FIRMWARE_SYNC_STOP_AFTER).
steps=0
step() {
  steps=$((steps + 1))
  if [ "${PI_FIRMWARE_SYNC_STOP_AFTER:-0}" = "$steps" ]; then
    echo "firmware-sync: stopped after step $steps (PI_FIRMWARE_SYNC_STOP_AFTER)" >&2
    kill -KILL $$
  fi
}
# A write: echoed before it runs, and again if it fails.
write() {
  echo "+ $*"
  "$@" || die "failed: $* (the partition still boots: run the same command again)"
  step
}
flush() {
  echo "+ sync $dev"
  sync "$dev" || die "failed: sync $dev"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# The partition's files, read in one pass; FAT names are case-insensitive,
# so files are matched by their lower-case path.
mkdir "$work/part"
declare -A onpart=()
minfo -i "$dev" >/dev/null || die "cannot read a FAT file system on $dev (minfo failed): is it the firmware partition?"
# mdir fails on an empty file system: nothing to read then.
listing=$(mdir -/ -b -i "$dev" ::/ 2>/dev/null || true)
if printf '%s\n' "$listing" | grep -q -v -e '/$' -e '^$'; then
  mcopy -s -n -i "$dev" '::/*' "$work/part/" || die "cannot read the files of $dev (mcopy failed)"
fi
while IFS= read -r p; do
  [ -n "$p" ] && onpart[${p,,}]=$p
done < <(cd "$work/part" && find . -type f | sed 's|^\./||')

# The files of DIR that the partition lacks or holds otherwise.
todo=()
missing=()
while IFS= read -r p; do
  have=${onpart[${p,,}]:-}
  if [ -z "$have" ]; then
    todo+=("$p")
    missing+=("$p")
  elif ! cmp -s "$dir/$p" "$work/part/$have"; then
    todo+=("$p")
  fi
done < <(cd "$dir" && find -L . -type f | sed 's|^\./||' | LC_ALL=C sort)
total=$(cd "$dir" && find -L . -type f | wc -l)

if [ "$mode" = check ]; then
  for p in "${todo[@]}"; do
    if [[ " ${missing[*]} " == *" $p "* ]]; then echo "missing=$p"; else echo "differs=$p"; fi
  done
  v=${onpart[pi-nixos-firmware.txt]:-}
  if [ -n "$v" ]; then
    grep -E '^[A-Za-z0-9_.-]+=' "$work/part/$v" | sed 's/^/version=/' || true
  fi
  echo "files=$total"
  [ ${#todo[@]} -eq 0 ]
  exit $?
fi

if [ ${#todo[@]} -eq 0 ]; then
  say "$dev matches $dir ($total files): nothing to write"
  exit 0
fi

# config.txt last: the firmware reads it first, and the old one keeps
# naming files that exist until the end.
files=()
config=
for p in "${todo[@]}"; do
  if [ "${p,,}" = config.txt ]; then config=$p; else files+=("$p"); fi
done
[ -z "$config" ] || files+=("$config")

# What is kept as .bak: the current config.txt and the files its kernel=
# lines name (U-Boot), when this sync replaces them.
baks=()
cur=${onpart[config.txt]:-}
if [ -n "$cur" ]; then
  named=$(sed -n 's/^[[:space:]]*kernel[[:space:]]*=[[:space:]]*\([^[:space:]#]*\).*/\1/p' "$work/part/$cur" | sort -u)
  for p in "${todo[@]}"; do
    have=${onpart[${p,,}]:-}
    [ -n "$have" ] || continue
    if [ "${p,,}" = config.txt ] || printf '%s\n' "$named" | grep -qixF -- "$p"; then
      baks+=("$p")
    fi
  done
fi

# Everything new is first written into a staging folder on the partition,
# beside the files it replaces; then one `mmove` per folder moves it into
# place. mtools writes a folder's entries at the end of the process, in one
# write() of that folder's directory region (then the FAT), so the files of
# one folder switch together, and start*.elf never runs with another
# release's fixup*.dat.
stage=.pi-nixos-new
dirs=$(printf '%s\n' "${files[@]}" | grep / | sed 's|/[^/]*$||' | LC_ALL=C sort -u || true)

# Space: the staged files and .bak copies all exist beside the old files
# at the fullest moment; a folder takes a cluster.
csize=$(minfo -i "$dev" | awk '/^sector size:/ {s = $3} /^cluster size:/ {c = $3} END {print s * c}')
free=$(mdir -i "$dev" ::/ | sed -n 's/ bytes free//p' | tr -dc 0-9)
if [ -z "$csize" ] || [ "$csize" -eq 0 ] || [ -z "$free" ]; then
  die "cannot read the cluster size or the free space of $dev (minfo, mdir)"
fi
clusters() { echo $((($1 + csize - 1) / csize)); }
need=1
for b in "${baks[@]}"; do
  need=$((need + $(clusters "$(stat -L -c %s "$work/part/${onpart[${b,,}]}")")))
done
for p in "${files[@]}"; do
  need=$((need + $(clusters "$(stat -L -c %s "$dir/$p")")))
done
for d in $dirs; do
  need=$((need + 2))
done
need=$((need * csize))
if [ "$need" -gt "$free" ]; then
  die "$dev has $((free / 1024)) KiB free but this update needs $((need / 1024)) KiB (the new files beside the ones they replace, and the .bak copies of config.txt and U-Boot): nothing was changed; free space on the partition (mdir -i $dev ::/ lists it: files the new system no longer has can go) or make it larger" 3
fi

say "$dev: ${#todo[@]} of $total files differ from $dir: ${todo[*]}"
say "keeping as .bak: ${baks[*]:-nothing}; space needed $((need / 1024)) KiB of $((free / 1024)) KiB free"
if [ "$mode" = dry-run ]; then
  say "dry run: nothing written"
  exit 0
fi

flush
# What an interrupted run left.
if mdir -i "$dev" "::/$stage" >/dev/null 2>&1; then
  write mdeltree -i "$dev" "::/$stage"
fi
write mmd -i "$dev" "::/$stage"
for d in $dirs; do
  write mmd -i "$dev" "::/$stage/$d"
done
for b in "${baks[@]}"; do
  write mcopy -o -i "$dev" "$work/part/${onpart[${b,,}]}" "::/$stage/$b.bak"
done
for p in "${files[@]}"; do
  [ "$p" = "$config" ] || write mcopy -o -i "$dev" "$dir/$p" "::/$stage/$p"
done
flush
# Sub-folders (overlays…) first, then the top folder with the .bak copies
# ahead of what they save; config.txt stays out of it.
for d in $dirs; do
  mdir -i "$dev" "::/$d" >/dev/null 2>&1 || write mmd -i "$dev" "::/$d"
  batch=()
  for p in "${files[@]}"; do
    [ "${p%/*}" = "$d" ] && [ "$p" != "$d" ] && batch+=("::/$stage/$p")
  done
  write mmove -D o -i "$dev" "${batch[@]}" "::/$d/"
done
batch=()
for b in "${baks[@]}"; do
  batch+=("::/$stage/$b.bak")
done
for p in "${files[@]}"; do
  [ "$p" = "$config" ] || [[ "$p" == */* ]] || batch+=("::/$stage/$p")
done
[ ${#batch[@]} -eq 0 ] || write mmove -D o -i "$dev" "${batch[@]}" ::/
flush
if [ -n "$config" ]; then
  write mcopy -o -i "$dev" "$dir/$config" "::/$stage/$config"
  flush
  write mmove -D o -i "$dev" "::/$stage/$config" ::/
  flush
fi
write mdeltree -i "$dev" "::/$stage"
flush
say "$dev now matches $dir: wrote ${todo[*]}"
