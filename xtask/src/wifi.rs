//! A host's Wi-Fi password as the age secret `wifi-<host>`: its name, what it
//! holds (the line `psk=<password>`, the file wpa_supplicant's
//! `networking.wireless.secretsFile` names, read as `ext:psk`), who may read
//! it on the Pi (root:wpa_supplicant 0440: wpa_supplicant runs as its own user
//! and group), and the problems `check` and `sd` report. modules/wifi.nix is
//! the Nix side.

use std::path::Path;

use crate::inventory::{Fleet, Host, INVENTORY, Problem};
use crate::secrets::{self, Entry};

/// The name wpa_supplicant looks the password up by (`pskRaw = "ext:psk"`).
pub const PSK: &str = "psk";
/// Owner, group and mode of the decrypted file on the Pi.
pub const OWNER: &str = "root";
pub const GROUP: &str = "wpa_supplicant";
pub const MODE: &str = "0440";

/// The secret that holds `host`'s Wi-Fi password.
pub fn secret_name(host: &str) -> String {
    format!("wifi-{host}")
}

/// Its entry in secrets/secrets.toml: read by that host only.
pub fn entry(host: &str) -> Entry {
    Entry {
        hosts: vec![host.to_string()],
        tags: Vec::new(),
        all: false,
        owner: OWNER.into(),
        group: GROUP.into(),
        mode: MODE.into(),
    }
}

/// The secret's value: the secrets file wpa_supplicant reads.
pub fn secret_text(passphrase: &str) -> String {
    format!("{PSK}={passphrase}\n")
}

/// A WPA passphrase (8 to 63 printable ASCII characters) or a raw 64-hex PSK.
pub fn check_passphrase(p: &str) -> Result<(), String> {
    if p.len() == 64 && p.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(());
    }
    if !p.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err("it has characters other than printable ASCII".into());
    }
    if !(8..=63).contains(&p.len()) {
        return Err(format!(
            "it is {} characters long; a WPA password has 8 to 63",
            p.len()
        ));
    }
    Ok(())
}

/// Whether wpa_supplicant (user and group `wpa_supplicant`) can read a file
/// with this owner, group and octal mode.
pub fn readable(e: &Entry) -> bool {
    let Ok(mode) = u32::from_str_radix(&e.mode, 8) else {
        return false;
    };
    (e.owner == GROUP && mode & 0o400 != 0)
        || (e.group == GROUP && mode & 0o040 != 0)
        || mode & 0o004 != 0
}

/// The line of `wifi = …` in `host`'s table of the inventory's text (its
/// header line when not found).
fn wifi_line(text: &str, host: &Host) -> usize {
    text.lines()
        .enumerate()
        .skip(host.line)
        .take_while(|(_, l)| !l.trim_start().starts_with('['))
        .find(|(_, l)| {
            let l = l.trim_start();
            l.starts_with("wifi") && l[4..].trim_start().starts_with('=')
        })
        .map_or(host.line, |(i, _)| i + 1)
}

/// Every Wi-Fi host whose password is not an age secret it can read, at
/// its `wifi` line (or the secret's entry), with the fix.
pub fn problems(root: &Path, fleet: &Fleet) -> Vec<Problem> {
    fleet
        .hosts
        .iter()
        .filter_map(|h| host_problem(root, fleet, h))
        .collect()
}

/// The same for one host (none when it has no `wifi`).
pub fn host_problem(root: &Path, fleet: &Fleet, h: &Host) -> Option<Problem> {
    let ssid = h.wifi.as_deref()?;
    let text = std::fs::read_to_string(root.join(INVENTORY)).unwrap_or_default();
    // An unreadable secrets.toml is reported by `secrets::problems`.
    let entries = secrets::read(root).unwrap_or_default();
    let name = secret_name(&h.name);
    let path = secrets::age_path(&name);
    let line = wifi_line(&text, h);
    let host = &h.name;
    let set = format!(
        "`cargo xtask wifi {host}` (asks for the password), commit {}/, then `cargo xtask deploy {host}` (or write its card with `cargo xtask sd {host}`)",
        secrets::DIR
    );
    let problem = |why: String, fix: String| Some(Problem::new(INVENTORY, line, why, fix));
    let Some(e) = entries.get(&name) else {
        return problem(
            format!(
                "host `{host}` joins the Wi-Fi `{ssid}` but has no Wi-Fi secret ({path}), so it would come up without Wi-Fi"
            ),
            set,
        );
    };
    if !secrets::readers(fleet, e).is_ok_and(|r| r.contains(host)) {
        return problem(
            format!(
                "host `{host}` joins the Wi-Fi `{ssid}` but does not read the secret `{name}` ({} gives it to other hosts)",
                secrets::FILE
            ),
            set,
        );
    }
    let Ok(Some(key)) = crate::identity::git_key(root, host) else {
        return problem(
            format!(
                "host `{host}` has no identity, so it cannot decrypt its Wi-Fi password ({path})"
            ),
            format!("`cargo xtask identity {host}`, then `cargo xtask wifi {host}` again"),
        );
    };
    let bytes = std::fs::read(root.join(&path)).unwrap_or_default();
    let tag = secrets::tag(&key);
    let encrypted_to_it =
        secrets::header_tags(&bytes).is_ok_and(|(tags, _)| tag.is_some_and(|t| tags.contains(&t)));
    if !encrypted_to_it {
        return problem(
            format!(
                "host `{host}` cannot read its Wi-Fi password: {path} is missing, unusable or not encrypted to its key ({})",
                crate::identity::git_path(host)
            ),
            format!(
                "`cargo xtask secret rekey` when the file is whole (a new host key), else {set}"
            ),
        );
    }
    if !readable(e) {
        let stext = std::fs::read_to_string(root.join(secrets::FILE)).unwrap_or_default();
        return Some(Problem::new(
            secrets::FILE,
            secrets::line_of(&stext, &name),
            format!(
                "secret `{name}` is {}:{} {} on the Pi, which wpa_supplicant (user and group {GROUP}) cannot read",
                e.owner, e.group, e.mode
            ),
            format!("`cargo xtask wifi {host}` writes it as {OWNER}:{GROUP} {MODE}"),
        ));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passphrases() {
        assert!(check_passphrase("correct horse").is_ok());
        assert!(check_passphrase("short").is_err());
        assert!(check_passphrase(&"a".repeat(64)).is_ok()); // raw PSK (hex)
        assert!(check_passphrase(&"g".repeat(64)).is_err());
        assert!(check_passphrase("tab\there ok?").is_err());
        assert_eq!(secret_text("pw pw pw"), "psk=pw pw pw\n");
    }

    #[test]
    fn who_can_read() {
        let mut e = entry("z");
        assert!(readable(&e));
        e.mode = "0400".into();
        assert!(!readable(&e));
        e.owner = GROUP.into();
        assert!(readable(&e));
        e = entry("z");
        e.group = "root".into();
        assert!(!readable(&e));
        e.mode = "x".into();
        assert!(!readable(&e));
    }

    #[test]
    fn the_wifi_line() {
        let text = "[fleet]\nwifi_country = \"GB\"\n\n[[host]]\nname = \"a\"\nmodel = \"pi4\"\naddress = \"a.local\"\n\n[[host]]\nname = \"z\"\nmodel = \"zero2w\"\naddress = \"z.local\"\nwifi  = \"home\"\n";
        let (hosts, problems) = crate::inventory::parse_inventory(text);
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(wifi_line(text, &hosts[1]), 13);
        // No `wifi` line in its table: the header.
        assert_eq!(wifi_line(text, &hosts[0]), hosts[0].line);
    }

    #[test]
    fn nix_module_agrees() {
        let module = include_str!("../../modules/wifi.nix");
        assert!(module.contains("secretName = \"wifi-${host.name}\";"));
        assert!(module.contains(&format!("pskRaw = \"ext:{PSK}\"")));
    }
}
