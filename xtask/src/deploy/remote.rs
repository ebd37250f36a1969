//! What runs on the Pi: the probe (facts for preflight, health and status)
//! and the activation helper with its rollback watchdog. Both are plain
//! POSIX sh with their values passed as arguments, never spliced in.

use std::collections::BTreeMap;

/// The system profile NixOS boots and switches from.
pub const PROFILE: &str = "/nix/var/nix/profiles/system";
/// Per-deploy state on the target (tmpfs: gone after a reboot).
pub const STATE: &str = "/run/pi-nixos";

/// Prints `key=value` lines about the system; `$1` lists declared containers
/// (space separated) whose systemd units to check. Compose services are
/// `running=<project>/<service>` once up (and healthy, with a healthcheck).
pub const PROBE: &str = concat!(
    r#"p=/nix/var/nix/profiles/system
echo "arch=$(uname -m)"
[ -e /etc/NIXOS ] && echo nixos=1
[ -d /run/systemd/system ] && echo systemd=1
echo "current=$(readlink -f /run/current-system 2>/dev/null)"
echo "profile=$(readlink $p 2>/dev/null)"
echo "profile_path=$(readlink -f $p 2>/dev/null)"
echo "version=$(cat /run/current-system/nixos-version 2>/dev/null)"
echo "uptime=$(cut -d' ' -f1 /proc/uptime)"
echo "df=$(df -Pk /nix/store 2>/dev/null | tail -n 1)"
for g in /nix/var/nix/profiles/system-*-link; do
  [ -L "$g" ] && echo "gen=${g##*/} $(stat -c %Y "$g")"
done
if [ -d /run/systemd/system ]; then
  systemctl list-units --state=failed --plain --no-legend --no-pager 2>/dev/null | while read -r u rest; do echo "failed=$u"; done
  for c in $1; do
    for b in docker podman; do
      systemctl is-active --quiet "$b-$c.service" 2>/dev/null && echo "running=$c"
    done
  done
fi
command -v docker >/dev/null 2>&1 && docker ps --format '{{.Names}}' 2>/dev/null | sed 's/^/running=/'
"#,
    include_str!("compose-probe.sh"),
    r#"[ -r /var/lib/pi-nixos/deployed ] && sed 's/^/deployed_/' /var/lib/pi-nixos/deployed
true
"#
);

/// The activation helper, written to `/run/pi-nixos/<run>/run`.
///
/// - `activate DIR ACTION HOW TARGET OLD CONFIRM LIMIT`: sets the system
///   profile (HOW=set: to store path TARGET; HOW=gen: to generation TARGET);
///   for a switch, arms the activation watchdog (rolls back to generation
///   OLD after LIMIT seconds, stopping a hung activation), runs the new
///   system's `switch-to-configuration switch`; on failure rolls back at
///   once; on success arms the confirmation watchdog (CONFIRM seconds) and
///   disarms the first.
/// - `confirm DIR`: cancels the watchdog once activated (over a fresh SSH
///   connection); before that, or once decided, prints the state:
///   `not-started`, `activating`, `rolling-back`, `rolled-back`,
///   `rollback-failed` (then the reason on the next line).
/// - `timeout DIR OLD WHICH WHY`: what a watchdog runs.
/// - `rollback DIR OLD WHY`: roll back now (health check failed).
///
/// `DIR/decided` is created by whichever of confirm, a watchdog and a
/// failed activation comes first (`mkdir` is atomic), so nothing races.
pub const HELPER: &str = r#"#!/bin/sh
# pi-nixos deploy helper: activation with an automatic rollback.
set -u
p=/nix/var/nix/profiles/system
cmd=$1; d=$2
tok=${d##*/}
log() { echo "pi-nixos: $*"; }
rollback() {
  log "rolling back to generation $1"
  nix-env -p "$p" --switch-generation "$1" || return 1
  "$(readlink -f "$p")/bin/switch-to-configuration" switch
}
# arm WHICH SECONDS OLD WHY: run `timeout` after SECONDS unless decided.
arm() {
  if [ -d /run/systemd/system ]; then
    systemd-run --quiet --collect --unit="pi-nixos-rollback-$tok-$1" \
      --on-active="${2}s" --timer-property=AccuracySec=100ms \
      -E PATH -E LOCALE_ARCHIVE \
      --description="pi-nixos: roll back unless the deploy is confirmed" \
      /bin/sh "$d/run" timeout "$d" "$3" "$1" "$4"
  else
    setsid /bin/sh -c 'sleep "$1"; exec /bin/sh "$2/run" timeout "$2" "$3" "$4" "$5"' \
      sh "$2" "$d" "$3" "$1" "$4" </dev/null >/dev/null 2>&1 &
  fi
}
disarm() {
  [ -d /run/systemd/system ] && systemctl stop "pi-nixos-rollback-$tok-$1.timer" >/dev/null 2>&1
  true
}
# finish OLD WHY: roll back (the caller holds DIR/decided), say how it went.
finish() {
  printf '%s\n' "$2" > "$d/reason"
  echo rolling-back > "$d/result"
  if rollback "$1"; then echo rolled-back > "$d/result"; else echo rollback-failed > "$d/result"; return 1; fi
}
# The activation's own error: its first line about an error or a failure.
why() {
  w=$(grep -i -E 'error|fail' "$d/switch.log" 2>/dev/null | grep -v -F 'error(s) occurred' | head -n 1)
  [ -n "$w" ] || w=$(grep -v '^[[:space:]]*$' "$d/switch.log" 2>/dev/null | tail -n 1)
  echo "$w" | sed 's/^[[:space:]]*//'
}
case $cmd in
activate)
  touch "$d/started"
  echo $$ > "$d/activate.pid"
  action=$3; how=$4; target=$5; old=$6; confirm=$7; limit=$8
  if [ "$how" = set ]; then
    nix-env -p "$p" --set "$target" || exit 10
  else
    nix-env -p "$p" --switch-generation "$target" || exit 10
  fi
  new=$(readlink "$p"); new=${new#system-}; new=${new%-link}
  echo "new_generation=$new"
  sys=$(readlink -f "$p")
  if [ "$action" = boot ]; then
    if "$sys/bin/switch-to-configuration" boot; then exit 0; fi
    log "switch-to-configuration boot failed; the profile goes back to generation $old"
    nix-env -p "$p" --switch-generation "$old"
    "$(readlink -f "$p")/bin/switch-to-configuration" boot
    exit 12
  fi
  if ! arm activation "$limit" "$old" "activation did not finish within ${limit}s"; then
    log "cannot arm the watchdog; the profile goes back to generation $old, nothing was activated"
    nix-env -p "$p" --switch-generation "$old"
    exit 14
  fi
  echo armed=1
  # Output to a file, shown afterwards: a cut connection cannot break it.
  "$sys/bin/switch-to-configuration" switch > "$d/switch.log" 2>&1 </dev/null
  rc=$?
  cat "$d/switch.log"
  if [ $rc = 0 ]; then
    arm confirm "$confirm" "$old" "no confirmation arrived within ${confirm}s" || log "cannot arm the confirmation watchdog"
    touch "$d/activated"
    disarm activation
    log "activated generation $new; it rolls back to $old in ${confirm}s unless confirmed"
    echo activated=1
    exit 0
  fi
  mkdir "$d/decided" 2>/dev/null || exit 12
  w=$(why)
  log "switch-to-configuration switch failed: $w"
  disarm activation
  finish "$old" "activation failed: $w"
  exit 12
  ;;
confirm)
  [ -e "$d/started" ] || { echo not-started; exit 0; }
  if [ ! -e "$d/decided" ]; then
    [ -e "$d/activated" ] || { echo activating; exit 0; }
    if mkdir "$d/decided" 2>/dev/null; then
      echo confirmed > "$d/result"
      disarm confirm
      echo confirmed
      exit 0
    fi
  fi
  r=$(cat "$d/result" 2>/dev/null)
  echo "${r:-rolling-back}"
  cat "$d/reason" 2>/dev/null
  true
  ;;
timeout)
  if [ "$4" = activation ] && [ -e "$d/activated" ]; then exit 0; fi
  mkdir "$d/decided" 2>/dev/null || exit 0
  log "$5"
  if [ "$4" = activation ]; then
    if [ -d /run/systemd/system ]; then
      systemctl stop "pi-nixos-switch-$tok.service" >/dev/null 2>&1
    else
      kill "$(cat "$d/activate.pid")" 2>/dev/null
    fi
  fi
  finish "$3" "$5" || exit 1
  ;;
rollback)
  mkdir "$d/decided" 2>/dev/null
  finish "$3" "$4" || exit 1
  ;;
esac
"#;

/// Writes the helper (from stdin) into a fresh `DIR`.
pub const INSTALL: &str = r#"umask 077; mkdir -p /run/pi-nixos && mkdir "$1" && cat > "$1/run""#;

/// Runs `DIR/run activate …` the way nixos-rebuild runs
/// switch-to-configuration: in a transient unit that outlives the SSH
/// connection, or plainly when the target has no systemd. The unit is
/// named after the run (a finished unit can linger while its cgroup is
/// cleaned up); waits while another activation (ours or nixos-rebuild's)
/// is active.
pub const ACTIVATE: &str = r#"d=$1; shift
if [ -d /run/systemd/system ]; then
  i=0
  while [ -n "$(systemctl list-units --plain --no-legend --state=active,activating,deactivating,reloading 'pi-nixos-switch-*' nixos-rebuild-switch-to-configuration.service 2>/dev/null)" ]; do
    i=$((i+1))
    if [ $i -gt 150 ]; then
      echo "another switch-to-configuration is running; try again when it is done" >&2
      exit 13
    fi
    sleep 0.2
  done
  exec systemd-run -E LOCALE_ARCHIVE -E NIXOS_INSTALL_BOOTLOADER -E PATH --collect --no-ask-password --pipe --quiet --service-type=exec --unit="pi-nixos-switch-${d##*/}" /bin/sh "$d/run" activate "$d" "$@"
fi
exec /bin/sh "$d/run" activate "$d" "$@""#;

/// Runs a helper subcommand: `sh DIR/run CMD DIR ARGS…`.
pub const CALL: &str = r#"c=$1; d=$2; shift 2; exec /bin/sh "$d/run" "$c" "$d" "$@""#;

/// Records a successful deploy or rollback: `$1` store path, `$2`
/// generation, `$3` commit (empty: the commit an earlier deploy recorded
/// for that store path, as after a rollback), `$4` time, `$5` by whom.
/// Every record is also appended to `history`, where rollbacks look up.
pub const WRITE_RECORD: &str = r#"set -e
v=/var/lib/pi-nixos; mkdir -p $v
c=$3
if [ -z "$c" ]; then
  c=$(grep -F " $1 " $v/history 2>/dev/null | grep -v ' unknown$' | tail -n 1 | cut -d' ' -f3)
fi
[ -n "$c" ] || c=unknown
printf 'path=%s\ngeneration=%s\ncommit=%s\ntime=%s\nby=%s\n' "$1" "$2" "$c" "$4" "$5" > $v/deployed.new
mv $v/deployed.new $v/deployed
printf '%s %s %s\n' "$4" "$1" "$c" >> $v/history
echo "commit=$c""#;

/// The per-host lock, held for a whole deploy or rollback by this script's
/// SSH session: an flock on `/run/pi-nixos/lock`, taken at once or refused
/// (printing `busy` and who holds it). `$1` says who we are. It is held
/// while the workstation sends a line at least every 30 s, and released
/// when the session ends (the run finished or died: EOF) or falls silent
/// (the connection is gone), so a dead run never blocks the host.
pub const LOCK: &str = r#"umask 077; mkdir -p /run/pi-nixos || exit 1
exec 9>>/run/pi-nixos/lock
if ! flock -n 9; then echo busy; cat /run/pi-nixos/lock.holder 2>/dev/null; exit 75; fi
printf '%s\n' "$1" > /run/pi-nixos/lock.holder
echo locked
while [ -n "$(timeout 30 head -n 1)" ]; do :; done
rm -f /run/pi-nixos/lock.holder"#;

/// Prints the store paths (read from stdin, one a line) the target lacks.
pub const MISSING: &str = r#"xargs nix-store --check-validity --print-invalid"#;

/// Facts the probe found.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Facts {
    pub arch: String,
    pub nixos: bool,
    pub systemd: bool,
    pub current: String,
    pub profile_generation: Option<u64>,
    pub profile_path: String,
    pub version: String,
    pub uptime_secs: Option<f64>,
    pub free_kib: Option<u64>,
    /// (generation, unix time of the profile link)
    pub generations: Vec<(u64, i64)>,
    pub failed: Vec<String>,
    pub running: Vec<String>,
    /// The target's deploy record (path, commit, time, …).
    pub deployed: BTreeMap<String, String>,
}

/// `system-12-link` → 12.
pub fn generation_of(link: &str) -> Option<u64> {
    link.strip_prefix("system-")?
        .strip_suffix("-link")?
        .parse()
        .ok()
}

pub fn parse_probe(text: &str) -> Facts {
    let mut f = Facts::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        match k {
            "arch" => f.arch = v.into(),
            "nixos" => f.nixos = true,
            "systemd" => f.systemd = true,
            "current" => f.current = v.into(),
            "profile" => f.profile_generation = generation_of(v),
            "profile_path" => f.profile_path = v.into(),
            "version" => f.version = v.into(),
            "uptime" => f.uptime_secs = v.split_whitespace().next().and_then(|w| w.parse().ok()),
            "df" => f.free_kib = v.split_whitespace().nth(3).and_then(|s| s.parse().ok()),
            "gen" => {
                let mut w = v.split_whitespace();
                if let (Some(g), Some(t)) = (w.next().and_then(generation_of), w.next()) {
                    f.generations.push((g, t.parse().unwrap_or(0)));
                }
            }
            "failed" => f.failed.push(v.trim_start_matches('●').trim().into()),
            "running" => {
                if !f.running.iter().any(|r| r == v) {
                    f.running.push(v.into())
                }
            }
            _ => {
                if let Some(key) = k.strip_prefix("deployed_") {
                    f.deployed.insert(key.into(), v.into());
                }
            }
        }
    }
    f.generations.sort();
    f
}

impl Facts {
    /// The Nix system name of the target (`uname -m` → `aarch64-linux`).
    pub fn nix_system(&self) -> String {
        let arch = match self.arch.as_str() {
            "arm64" => "aarch64",
            "armv7l" | "armv6l" => self.arch.as_str(),
            "i686" | "i386" => "i686",
            a => a,
        };
        format!("{arch}-linux")
    }

    /// Date (unix time) of a generation.
    pub fn generation_time(&self, g: u64) -> Option<i64> {
        self.generations
            .iter()
            .find(|(n, _)| *n == g)
            .map(|(_, t)| *t)
    }

    /// The generation before `g` that still exists.
    pub fn previous(&self, g: u64) -> Option<u64> {
        self.generations
            .iter()
            .map(|(n, _)| *n)
            .filter(|n| *n < g)
            .max()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "arch=aarch64\nnixos=1\nsystemd=1\ncurrent=/nix/store/abc-nixos-system-pi\nprofile=system-3-link\nprofile_path=/nix/store/abc-nixos-system-pi\nversion=26.05.20260101.abc (Yarara)\nuptime=1234.56 100.0\ndf=/dev/mmcblk0p2 29000000 5000000 24000000 18% /\ngen=system-2-link 1700000000\ngen=system-3-link 1700001000\nfailed=● foo.service\nrunning=web\nrunning=web\ndeployed_path=/nix/store/abc-nixos-system-pi\ndeployed_commit=abcdef\n";

    #[test]
    fn parses_probe() {
        let f = parse_probe(SAMPLE);
        assert!(f.nixos && f.systemd);
        assert_eq!(f.nix_system(), "aarch64-linux");
        assert_eq!(f.profile_generation, Some(3));
        assert_eq!(f.free_kib, Some(24000000));
        assert_eq!(f.generations, vec![(2, 1700000000), (3, 1700001000)]);
        assert_eq!(f.previous(3), Some(2));
        assert_eq!(f.previous(2), None);
        assert_eq!(f.failed, vec!["foo.service"]);
        assert_eq!(f.running, vec!["web"]);
        assert_eq!(f.deployed["commit"], "abcdef");
        assert_eq!(f.uptime_secs, Some(1234.56));
    }

    #[test]
    fn generation_names() {
        assert_eq!(generation_of("system-12-link"), Some(12));
        assert_eq!(generation_of("per-user"), None);
    }
}
