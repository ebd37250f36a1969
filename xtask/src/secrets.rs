//! Secrets: `secrets/<name>.age`, age-encrypted (the `age` crate, the
//! library of rage) to the SSH host keys of the hosts that read them and to
//! the admin keys in `keys/authorized_keys`. `secrets/secrets.toml` says,
//! once, which hosts read each secret and its owner and mode on the Pi:
//!
//! ```toml
//! [db-pass]
//! hosts = ["rpi-box-01"]   # and/or tags = ["web"], or all = true
//! owner = "root"
//! group = "root"
//! mode = "0400"
//! ```
//!
//! `check` verifies every file's recipients from its age header, without
//! decrypting: each `ssh-ed25519`/`ssh-rsa` stanza names its key by a tag,
//! the first 4 bytes of the SHA-256 of the key's SSH wire encoding.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::inventory::{Fleet, Problem};
use crate::{identity, sshkey};

pub const DIR: &str = "secrets";
pub const FILE: &str = "secrets/secrets.toml";

/// One secret's entry.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    #[serde(default)]
    pub hosts: Vec<String>,
    #[serde(default)]
    pub tags: Vec<String>,
    #[serde(default)]
    pub all: bool,
    #[serde(default = "root")]
    pub owner: String,
    #[serde(default = "root")]
    pub group: String,
    #[serde(default = "mode")]
    pub mode: String,
}

fn root() -> String {
    "root".into()
}
fn mode() -> String {
    "0400".into()
}

/// `secrets/<name>.age`.
pub fn age_path(name: &str) -> String {
    format!("{DIR}/{name}.age")
}

/// A secret's name: what a file name and a systemd credential can hold.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || name.starts_with(['-', '.'])
        || !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
    {
        return Err(format!(
            "`{name}` is not a usable secret name: letters, digits, `-`, `_`, `.` (not first), at most 64"
        ));
    }
    Ok(())
}

/// The entries of `secrets/secrets.toml` (empty when there is none).
pub fn read(root: &Path) -> Result<BTreeMap<String, Entry>> {
    let path = root.join(FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(BTreeMap::new()),
        Err(e) => return Err(e).with_context(|| format!("cannot read {FILE}")),
    };
    toml::from_str(&text).map_err(|e| anyhow::anyhow!("{FILE}: {e}"))
}

/// The line of `[name]` in the file's text (1 when not found).
pub fn line_of(text: &str, name: &str) -> usize {
    text.lines()
        .position(|l| l.trim() == format!("[{name}]") || l.trim() == format!("[\"{name}\"]"))
        .map_or(1, |i| i + 1)
}

fn toml_list(v: &[String]) -> String {
    let items: Vec<String> = v.iter().map(|s| format!("{s:?}")).collect();
    format!("[{}]", items.join(", "))
}

/// The file's text for `entries` (the xtask writes it whole).
pub fn render(entries: &BTreeMap<String, Entry>) -> String {
    let mut s = String::from(
        "# Which hosts read each secret (secrets/<name>.age), and its owner and mode on the Pi.\n# Written by `cargo xtask secret set/rm`; read by the xtask and by Nix. See documentation/secrets.md.\n",
    );
    for (name, e) in entries {
        s += &format!("\n[{name:?}]\n");
        if e.all {
            s += "all = true\n";
        }
        if !e.hosts.is_empty() {
            s += &format!("hosts = {}\n", toml_list(&e.hosts));
        }
        if !e.tags.is_empty() {
            s += &format!("tags = {}\n", toml_list(&e.tags));
        }
        s += &format!(
            "owner = {:?}\ngroup = {:?}\nmode = {:?}\n",
            e.owner, e.group, e.mode
        );
    }
    s
}

/// Writes `secrets/secrets.toml` with `entries`.
pub fn write_entries(root: &Path, entries: &BTreeMap<String, Entry>) -> Result<()> {
    std::fs::create_dir_all(root.join(DIR))?;
    std::fs::write(root.join(FILE), render(entries)).with_context(|| format!("cannot write {FILE}"))
}

/// Encrypts `value` to `recipients` into `secrets/<name>.age` (temp, rename),
/// with the `age` crate of `xtask-crypto` (`age`).
pub fn encrypt_to(
    age: &dyn crate::cmd::secret::Age,
    root: &Path,
    name: &str,
    recipients: &[Recipient],
    value: &[u8],
) -> Result<()> {
    let out = age.encrypt(recipients, value)?;
    std::fs::create_dir_all(root.join(DIR))?;
    let path = root.join(age_path(name));
    let tmp = path.with_extension("age.partial");
    std::fs::write(&tmp, &out).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &path).with_context(|| format!("cannot write {}", path.display()))
}

/// The hosts that read a secret.
pub fn readers(fleet: &Fleet, e: &Entry) -> Result<Vec<String>> {
    let mut out = BTreeSet::new();
    for h in &e.hosts {
        fleet.host(h)?;
        out.insert(h.clone());
    }
    for t in &e.tags {
        let tagged: Vec<&str> = fleet
            .hosts
            .iter()
            .filter(|h| h.tags.contains(t))
            .map(|h| h.name.as_str())
            .collect();
        if tagged.is_empty() {
            bail!(
                "the tag `{t}` matches no host in hosts/fleet.toml: check its spelling (`cargo xtask list`)"
            );
        }
        out.extend(tagged.into_iter().map(String::from));
    }
    if e.all {
        out.extend(fleet.hosts.iter().map(|h| h.name.clone()));
    }
    Ok(out.into_iter().collect())
}

/// The secrets as lib/inventory.nix exposes them (`inventory.secrets`):
/// readers (fleet hosts named, tagged or all, sorted), owner, group, mode.
/// An unreadable file gives `{}` here (`check` reports it on its own).
pub fn nix_view(fleet: &Fleet) -> serde_json::Value {
    let entries = read(&fleet.root).unwrap_or_default();
    let mut out = serde_json::Map::new();
    for (name, e) in entries {
        let mut readers: Vec<&str> = fleet
            .hosts
            .iter()
            .filter(|h| {
                e.all || e.hosts.contains(&h.name) || e.tags.iter().any(|t| h.tags.contains(t))
            })
            .map(|h| h.name.as_str())
            .collect();
        readers.sort();
        out.insert(
            name,
            serde_json::json!({ "readers": readers, "owner": e.owner, "group": e.group, "mode": e.mode }),
        );
    }
    serde_json::Value::Object(out)
}

/// A recipient: who it is, its `type base64` line, and the tag age writes for it.
#[derive(Clone, Debug, PartialEq)]
pub struct Recipient {
    pub who: String,
    pub line: String,
    pub tag: String,
}

/// The tag of an SSH key in an age stanza: base64 (no padding) of the
/// first 4 bytes of SHA-256 of the key's wire encoding.
pub fn tag(key: &sshkey::PublicKey) -> Option<String> {
    let wire = sshkey::decode_base64(&key.blob)?;
    let h = Sha256::digest(&wire);
    Some(encode_base64(&h[..4]))
}

fn encode_base64(b: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..=c.len() {
            s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
        }
    }
    s
}

/// Every recipient of a secret read by `hosts`: their Git keys and the
/// admin keys. A host without an identity or an admin key age cannot
/// encrypt to is an error saying what to do.
pub fn recipients(root: &Path, fleet: &Fleet, hosts: &[String]) -> Result<Vec<Recipient>> {
    let mut out = Vec::new();
    for h in hosts {
        let key = identity::git_key(root, h)?.with_context(|| {
            format!("host `{h}` has no identity yet, so it could not read the secret: make one with `cargo xtask identity {h}` (then commit it and write its card with `cargo xtask sd {h}`)")
        })?;
        out.push(Recipient {
            who: format!("host {h}"),
            line: format!("{} {}", key.kind, key.blob),
            tag: tag(&key).context("bad key data")?,
        });
    }
    for (n, l) in &fleet.key_lines {
        let Ok(key) = sshkey::parse_line(l) else {
            continue;
        };
        if !matches!(key.kind.as_str(), "ssh-ed25519" | "ssh-rsa") {
            bail!(
                "keys/authorized_keys:{n}: a {} key{}: age cannot encrypt to it, so that admin could not read secrets; add an ed25519 key (`ssh-keygen -t ed25519`, then `cargo xtask add-key`) and remove this one, or keep it only for SSH by moving it to a host's own configuration",
                key.kind,
                if key.comment.is_empty() {
                    String::new()
                } else {
                    format!(" ({})", key.comment)
                }
            );
        }
        out.push(Recipient {
            who: format!("admin key keys/authorized_keys:{n}"),
            line: format!("{} {}", key.kind, key.blob),
            tag: tag(&key).context("bad key data")?,
        });
    }
    if fleet.key_lines.is_empty() {
        bail!(
            "keys/authorized_keys has no admin key, so nobody could read the secret back: run `cargo xtask add-key`"
        );
    }
    Ok(out)
}

/// The stanzas of an age file's header, `(type, args)`, read without
/// decrypting; an error says why the file is not a whole age file.
pub fn stanzas(bytes: &[u8]) -> Result<Vec<(String, Vec<String>)>, String> {
    let text_end = bytes
        .windows(4)
        .position(|w| w == b"\n---")
        .ok_or("no header end (`---` line): the file is truncated or not an age file")?;
    let head = std::str::from_utf8(&bytes[..text_end])
        .map_err(|_| "the header is not text: not an age file (or armored: not supported)")?;
    let mut lines = head.lines();
    if lines.next() != Some("age-encryption.org/v1") {
        return Err("it does not start with `age-encryption.org/v1`: not an age file".into());
    }
    let mac_line_end = bytes[text_end + 1..]
        .iter()
        .position(|&b| b == b'\n')
        .ok_or("the header's MAC line is cut: the file is truncated")?;
    if bytes.len() <= text_end + 1 + mac_line_end + 1 + 16 {
        return Err("there is no payload after the header: the file is truncated".into());
    }
    let mut out = Vec::new();
    for l in lines {
        if let Some(rest) = l.strip_prefix("-> ") {
            let mut words = rest.split(' ').map(String::from);
            let kind = words.next().unwrap_or_default();
            out.push((kind, words.collect()));
        }
    }
    if out.is_empty() {
        return Err("the header has no recipient stanza".into());
    }
    Ok(out)
}

/// The recipient tags an age file's header names (ssh-ed25519 and ssh-rsa
/// stanzas), and whether it has stanzas of other types.
pub fn header_tags(bytes: &[u8]) -> Result<(BTreeSet<String>, bool), String> {
    let mut tags = BTreeSet::new();
    let mut other = false;
    for (kind, args) in stanzas(bytes)? {
        match (kind.as_str(), args.first()) {
            ("ssh-ed25519" | "ssh-rsa", Some(t)) => {
                tags.insert(t.clone());
            }
            _ => other = true,
        }
    }
    Ok((tags, other))
}

/// Every problem with the secrets, without decrypting anything.
pub fn problems(root: &Path, fleet: &Fleet) -> Vec<Problem> {
    let mut out = Vec::new();
    let entries = match read(root) {
        Ok(e) => e,
        Err(e) => {
            out.push(Problem::new(
                FILE,
                1,
                format!("{e:#}"),
                "fix the TOML (see documentation/secrets.md)",
            ));
            return out;
        }
    };
    let text = std::fs::read_to_string(root.join(FILE)).unwrap_or_default();
    let rekey = "`cargo xtask secret rekey` (it re-encrypts what is affected, and only that)";
    for (name, e) in &entries {
        let line = line_of(&text, name);
        let expected = match readers(fleet, e).and_then(|h| recipients(root, fleet, &h)) {
            Ok(r) => r,
            Err(err) => {
                out.push(Problem::new(
                    FILE,
                    line,
                    format!("secret `{name}`: {err:#}"),
                    "fix the entry or the keys, then `cargo xtask secret rekey`",
                ));
                continue;
            }
        };
        let path = age_path(name);
        let bytes = match std::fs::read(root.join(&path)) {
            Ok(b) => b,
            Err(_) => {
                out.push(Problem::new(FILE, line, format!("secret `{name}` has no {path}"), format!("set it: `cargo xtask secret set {name} …`, or remove the entry with `cargo xtask secret rm {name}`")));
                continue;
            }
        };
        let (tags, _) = match header_tags(&bytes) {
            Ok(t) => t,
            Err(why) => {
                out.push(Problem::new(
                    &path,
                    1,
                    format!("not a usable age file: {why}"),
                    format!("set it again: `cargo xtask secret set {name} …`"),
                ));
                continue;
            }
        };
        for r in &expected {
            if !tags.contains(&r.tag) {
                out.push(Problem::new(
                    FILE,
                    line,
                    format!(
                        "secret `{name}`: {} should read it but {path} is not encrypted to its key",
                        r.who
                    ),
                    rekey,
                ));
            }
        }
        let known: BTreeSet<&String> = expected.iter().map(|r| &r.tag).collect();
        let extra = tags.iter().filter(|t| !known.contains(t)).count();
        if extra > 0 {
            out.push(Problem::new(FILE, line, format!("secret `{name}`: {extra} key(s) no longer listed (a removed host or admin key, or a host's old key) can still read {path}"), rekey));
        }
    }
    // Containers' secrets: each one exists and its host reads it.
    for h in &fleet.hosts {
        let Ok(containers) = crate::containers::read(root, &h.name) else {
            continue;
        };
        let file = crate::containers::file(&h.name);
        let ctext = std::fs::read_to_string(root.join(&file)).unwrap_or_default();
        for c in containers {
            for n in &c.secrets {
                let reads = entries
                    .get(n)
                    .and_then(|e| readers(fleet, e).ok())
                    .is_some_and(|r| r.contains(&h.name));
                if !reads {
                    let line = ctext
                        .lines()
                        .position(|l| l.contains("secrets") && l.contains(&format!("\"{n}\"")))
                        .map_or(1, |i| i + 1);
                    out.push(Problem::new(
                        &file,
                        line,
                        format!("container `{}` uses the secret `{n}`, which {} does not read", c.name, h.name),
                        format!("`cargo xtask secret set {n} --host {}` (or add the host to its entry and `cargo xtask secret rekey`)", h.name),
                    ));
                }
            }
        }
    }
    // .age files without an entry.
    if let Ok(dir) = std::fs::read_dir(root.join(DIR)) {
        for f in dir.flatten() {
            let n = f.file_name().to_string_lossy().to_string();
            if let Some(name) = n.strip_suffix(".age")
                && !entries.contains_key(name)
            {
                out.push(Problem::new(
                    &age_path(name),
                    1,
                    format!("no entry for `{name}` in {FILE}, so no host gets it"),
                    format!("delete it, or set it again with `cargo xtask secret set {name} …`"),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64() {
        assert_eq!(encode_base64(b"abcd"), "YWJjZA");
        assert_eq!(encode_base64(b"abc"), "YWJj");
    }

    #[test]
    fn file_round_trip() {
        let mut m = BTreeMap::new();
        m.insert(
            "db-pass".to_string(),
            Entry {
                hosts: vec!["a".into()],
                tags: vec!["web".into()],
                owner: "root".into(),
                group: "root".into(),
                mode: "0400".into(),
                all: false,
            },
        );
        let text = render(&m);
        let back: BTreeMap<String, Entry> = toml::from_str(&text).unwrap();
        assert_eq!(back, m);
        assert_eq!(line_of(&text, "db-pass"), 4);
        assert!(check_name("db-pass").is_ok());
        assert!(check_name("../x").is_err());
        assert!(check_name("").is_err());
    }

    #[test]
    fn headers() {
        let good = b"age-encryption.org/v1\n-> ssh-ed25519 AbCdEf x\nbody\n-> X25519 y\nbody\n--- mac\n0123456789abcdef0123";
        let (tags, other) = header_tags(good).unwrap();
        assert_eq!(
            tags.into_iter().collect::<Vec<_>>(),
            vec!["AbCdEf".to_string()]
        );
        assert!(other);
        assert!(
            header_tags(b"age-encryption.org/v1\n-> ssh-ed25519 A x\n")
                .unwrap_err()
                .contains("truncated")
        );
        assert!(
            header_tags(b"hello\n--- x\n0123456789abcdef0123")
                .unwrap_err()
                .contains("not an age file")
        );
        assert!(
            header_tags(b"age-encryption.org/v1\n-> ssh-ed25519 A x\nb\n--- m\nshort")
                .unwrap_err()
                .contains("no payload")
        );
    }
}
