//! The Pi's FAT firmware partition for `cargo xtask status`: does it hold
//! what the running system's firmware folder holds, and which releases
//! (firmware, U-Boot…) does it carry. One shell snippet, run in the same
//! SSH call as the status probe (every line prefixed `firmware_`), and a
//! pure parser.
//!
//! The snippet runs the running system's own `pi-firmware-sync --check`
//! (modules/hardware/firmware-sync.nix links it and the firmware folder
//! into the system), so the device it reads is the one that system
//! writes; a system without them does not manage its firmware partition
//! (`profile = "generic"`, or built before the module existed).

use std::collections::BTreeMap;

use serde::Serialize;

pub const SCRIPT: &str = r#"s=/run/current-system
if [ -x "$s/pi-firmware-sync" ] && [ -d "$s/pi-firmware" ]; then
  run=; [ "$(id -u)" = 0 ] || run="sudo -n"
  out=$($run "$s/pi-firmware-sync" --check "$s/pi-firmware" 2>&1)
  echo "firmware_rc=$?"
  printf '%s\n' "$out" | sed -e 's/^error: /error=/' -e 's/^/firmware_/'
else
  echo firmware_rc=none
fi
"#;

/// Unknown values are `None` (`null` in JSON).
#[derive(Serialize, Debug, Default, Clone, PartialEq)]
pub struct Firmware {
    /// matches | differs | not managed | unknown
    pub state: String,
    /// Files of the running system's firmware folder that the partition
    /// holds otherwise (`differs`) or not at all (`missing`).
    pub differs: Vec<String>,
    pub missing: Vec<String>,
    /// `pi-nixos-firmware.txt` on the partition: raspberrypifw, U-Boot…
    pub versions: BTreeMap<String, String>,
    /// Why the check could not tell (`unknown`).
    pub error: Option<String>,
}

/// Reads the `firmware_*` lines of a probe's output (`None`: none there).
pub fn parse(text: &str) -> Option<Firmware> {
    let mut f = Firmware::default();
    let mut rc = None;
    // `files=` ends a check that ran; anything else it printed is the why.
    let mut checked = false;
    let mut other = None;
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("firmware_") else {
            continue;
        };
        let Some((k, v)) = rest.split_once('=') else {
            other.get_or_insert_with(|| rest.to_string());
            continue;
        };
        match k {
            "rc" => rc = Some(v.trim().to_string()),
            "files" => checked = true,
            "differs" => f.differs.push(v.into()),
            "missing" => f.missing.push(v.into()),
            "version" => {
                if let Some((name, value)) = v.split_once('=') {
                    f.versions.insert(name.into(), value.into());
                }
            }
            "error" => f.error = Some(v.into()),
            _ => {
                other.get_or_insert_with(|| rest.to_string());
            }
        }
    }
    f.state = match (rc.as_deref()?, checked) {
        ("none", _) => "not managed",
        ("0", true) => "matches",
        ("1", true) => "differs",
        _ => "unknown",
    }
    .into();
    if f.state == "unknown" && f.error.is_none() {
        f.error = Some(other.unwrap_or_else(|| {
            format!(
                "pi-firmware-sync --check exited with {}",
                rc.unwrap_or_default()
            )
        }));
    }
    Some(f)
}

/// The FIRMWARE column: `yes`, `no: N files differ`, `not managed`, `?`, then
/// the releases the partition carries.
pub fn column(f: Option<&Firmware>) -> String {
    let Some(f) = f else {
        return "-".into();
    };
    let n = f.differs.len() + f.missing.len();
    let state = match f.state.as_str() {
        "matches" => "yes".to_string(),
        "differs" if n == 1 => "no: 1 file differs".to_string(),
        "differs" => format!("no: {n} files differ"),
        "not managed" => return "not managed".into(),
        _ => "?".to_string(),
    };
    if f.versions.is_empty() {
        return state;
    }
    let v: Vec<String> = f.versions.iter().map(|(k, v)| format!("{k} {v}")).collect();
    format!("{state} ({})", v.join(", "))
}

/// What to say under the table about a host's partition, if anything.
pub fn note(host: &str, f: &Firmware) -> Option<String> {
    let files: Vec<String> = f
        .differs
        .iter()
        .cloned()
        .chain(f.missing.iter().map(|m| format!("{m} (missing)")))
        .collect();
    match f.state.as_str() {
        "differs" => Some(format!(
            "{host}: the firmware partition differs from the running system: {}; `cargo xtask ssh {host} -- /run/current-system/pi-firmware-sync /run/current-system/pi-firmware` writes it (the next deploy does too)",
            files.join(", ")
        )),
        "unknown" => Some(format!(
            "{host}: the firmware partition could not be checked: {}",
            f.error.as_deref().unwrap_or("?")
        )),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_partition_that_differs() {
        let f = parse("health_load=1\nfirmware_rc=1\nfirmware_differs=config.txt\nfirmware_missing=overlays/uart0.dtbo\nfirmware_version=raspberrypifw=1.20250101\nfirmware_version=uboot=2025.01\nfirmware_files=14\n").unwrap();
        assert_eq!(f.state, "differs");
        assert_eq!(f.differs, vec!["config.txt"]);
        assert_eq!(f.missing, vec!["overlays/uart0.dtbo"]);
        assert_eq!(f.versions["uboot"], "2025.01");
        assert_eq!(
            column(Some(&f)),
            "no: 2 files differ (raspberrypifw 1.20250101, uboot 2025.01)"
        );
        assert!(
            note("pi", &f)
                .unwrap()
                .contains("overlays/uart0.dtbo (missing)")
        );
    }

    #[test]
    fn matching_unmanaged_and_failing() {
        let ok =
            parse("firmware_rc=0\nfirmware_version=uboot=2025.04\nfirmware_files=9\n").unwrap();
        assert_eq!(column(Some(&ok)), "yes (uboot 2025.04)");
        assert_eq!(note("pi", &ok), None);
        let none = parse("firmware_rc=none\n").unwrap();
        assert_eq!(column(Some(&none)), "not managed");
        let bad =
            parse("firmware_rc=2\nfirmware_error=/dev/disk/by-label/FIRMWARE does not exist\n")
                .unwrap();
        assert_eq!(bad.state, "unknown");
        assert_eq!(column(Some(&bad)), "?");
        assert!(note("pi", &bad).unwrap().contains("does not exist"));
        // sudo refused: its exit code 1 is not a differing partition.
        let sudo = parse("firmware_rc=1\nfirmware_sudo: a password is required\n").unwrap();
        assert_eq!(sudo.state, "unknown");
        assert_eq!(sudo.error.as_deref(), Some("sudo: a password is required"));
        assert_eq!(parse("health_load=1\n"), None);
        assert_eq!(column(None), "-");
    }
}
