//! The fleet: `hosts/fleet.toml` (hosts) and `keys/authorized_keys` (admin keys).
//! Parsing and validation are pure; every problem carries its file and line.

use std::collections::BTreeMap;
use std::fmt;
use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use serde::Serialize;
use toml::de::{DeTable, DeValue};

use crate::sshkey;

/// Where the hosts are listed, relative to the repository root.
pub const INVENTORY: &str = "hosts/fleet.toml";
/// Where the admin SSH public keys live, relative to the repository root.
pub const KEYS: &str = "keys/authorized_keys";
/// The keys a `[[host]]` entry may have.
pub const HOST_KEYS: &[&str] = &[
    "name",
    "model",
    "address",
    "user",
    "port",
    "tags",
    "build_host",
    "wifi",
    "gateway",
    "dns",
    "profile",
];
/// The keys the `[fleet]` table (settings of the whole fleet) may have.
pub const FLEET_KEYS: &[&str] = &["wifi_country", "cache", "cache_key", "monitoring"];

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Model {
    Pi3,
    Pi4,
    Zero2w,
}

impl Model {
    pub const ALL: [Model; 3] = [Model::Pi3, Model::Pi4, Model::Zero2w];

    pub fn as_str(self) -> &'static str {
        match self {
            Model::Pi3 => "pi3",
            Model::Pi4 => "pi4",
            Model::Zero2w => "zero2w",
        }
    }

    fn parse(s: &str) -> Option<Model> {
        Model::ALL.into_iter().find(|m| m.as_str() == s)
    }

    /// Models without Ethernet: their first boot needs Wi-Fi.
    pub fn wifi_only(self) -> bool {
        self == Model::Zero2w
    }

    /// The interface a static address goes on (modules/networking.nix
    /// chooses the same): the Ethernet port, or Wi-Fi on a model without
    /// one. Classic kernel names, as every model has one of each at most.
    pub fn static_interface(self) -> &'static str {
        if self.wifi_only() { "wlan0" } else { "eth0" }
    }
}

impl fmt::Display for Model {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The system a host runs around the SD card layout
/// (modules/hardware/sd-card.nix, documentation/boot.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// nixpkgs' sd-image.nix with only what the fleet's Pis use, and a
    /// FIRMWARE partition the repository owns.
    #[default]
    Lean,
    /// nixpkgs' sd-image-aarch64.nix as it is: the way back.
    Generic,
}

impl Profile {
    pub const ALL: [Profile; 2] = [Profile::Lean, Profile::Generic];

    pub fn as_str(self) -> &'static str {
        match self {
            Profile::Lean => "lean",
            Profile::Generic => "generic",
        }
    }

    fn parse(s: &str) -> Option<Profile> {
        Profile::ALL.into_iter().find(|p| p.as_str() == s)
    }
}

impl fmt::Display for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Host {
    pub name: String,
    pub model: Model,
    pub address: String,
    pub user: String,
    pub port: u16,
    pub tags: Vec<String>,
    pub build_host: Option<String>,
    /// SSID of the Wi-Fi network the host joins (its PSK is never in the repo).
    pub wifi: Option<String>,
    /// `lean` (default) or `generic`.
    pub profile: Profile,
    /// The address the Pi sets itself (`address = "a.b.c.d/len"` with
    /// `gateway` and `dns`); `None`: it asks DHCP. `address` above is then
    /// this address without its prefix length.
    pub static_ipv4: Option<StaticIpv4>,
    /// Line of the `[[host]]` header in the inventory.
    #[serde(skip)]
    pub line: usize,
}

/// A static IPv4 configuration, as modules/networking.nix applies it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct StaticIpv4 {
    pub address: String,
    pub prefix_length: u8,
    pub gateway: String,
    pub dns: Vec<String>,
}

/// How the workstation finds a host at its inventory `address`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reach {
    /// `<name>.local`: the Pi publishes it over mDNS (modules/mdns.nix).
    Mdns,
    /// An address the Pi configures itself.
    Static,
    /// An IP address that only DHCP (the router) can give the Pi.
    Dhcp,
    /// A DNS name the network's DNS must resolve.
    Dns,
}

impl Host {
    /// `user@address`, the SSH destination.
    pub fn destination(&self) -> String {
        format!("{}@{}", self.user, self.address)
    }

    /// What the host's address relies on.
    pub fn reach(&self) -> Reach {
        if self.static_ipv4.is_some() {
            Reach::Static
        } else if self.address.parse::<IpAddr>().is_ok() {
            Reach::Dhcp
        } else if is_mdns_name(&self.address) {
            Reach::Mdns
        } else {
            Reach::Dns
        }
    }

    /// One line for `cargo xtask check`: what the address relies on and,
    /// where it depends on something outside the Pi, what to do.
    pub fn reach_note(&self) -> String {
        let n = &self.name;
        let a = &self.address;
        match (self.reach(), &self.static_ipv4) {
            (Reach::Static, Some(s)) => format!(
                "{n}: static {}/{} via {} on {} (set by the Pi itself), and {n}.local over mDNS",
                s.address,
                s.prefix_length,
                s.gateway,
                self.model.static_interface()
            ),
            (Reach::Mdns, _) => format!(
                "{n}: mDNS name {a} (published by the Pi; the workstation resolves it with avahi/libnss-mdns)"
            ),
            (Reach::Dhcp, _) => format!(
                "{n}: {a} only if the router hands it out: reserve it for the Pi in the router's DHCP settings, write it with its prefix, gateway and dns to make it static, or use {n}.local"
            ),
            (Reach::Dns, _) => {
                format!("{n}: DNS name {a} (your network's DNS must resolve it to the Pi)")
            }
            (Reach::Static, None) => unreachable!("Reach::Static comes from static_ipv4"),
        }
    }
}

/// Settings of the whole fleet: the `[fleet]` table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct FleetSettings {
    /// Wi-Fi regulatory domain (ISO 3166-1 alpha-2), written as
    /// wpa_supplicant's `country=`; required when a host has `wifi`.
    pub wifi_country: Option<String>,
    /// The binary cache CI pushes the hosts' systems to (its substituter
    /// URL), and its public key: written once here, read by the workflows
    /// (`cargo xtask ci cache`), the Pis and `check`.
    pub cache: Option<String>,
    pub cache_key: Option<String>,
    /// The host that runs Prometheus, Grafana and the journal receiver
    /// (modules/monitoring/); every Pi sends it metrics and its journal.
    pub monitoring: Option<String>,
    /// Where `monitoring` is written (for its problems).
    #[serde(skip)]
    pub monitoring_line: usize,
}

/// One thing wrong with the fleet definition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// Path relative to the repository root.
    pub file: String,
    /// 1-based; 0 when the problem is about the file as a whole.
    pub line: usize,
    pub message: String,
    /// What to do about it.
    pub fix: String,
}

impl Problem {
    pub fn new(
        file: &str,
        line: usize,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Problem {
            file: file.to_string(),
            line,
            message: message.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "{}:{}: {}", self.file, self.line, self.message)?;
        } else {
            write!(f, "{}: {}", self.file, self.message)?;
        }
        if !self.fix.is_empty() {
            write!(f, "\n    fix: {}", self.fix)?;
        }
        Ok(())
    }
}

/// The fleet as read from the repository.
#[derive(Clone, Debug)]
pub struct Fleet {
    pub root: PathBuf,
    pub hosts: Vec<Host>,
    pub settings: FleetSettings,
    /// Non-comment lines of `keys/authorized_keys`, trimmed, with their line numbers.
    pub key_lines: Vec<(usize, String)>,
}

impl Fleet {
    /// Reads the fleet and returns it with every problem found in it.
    pub fn read(root: &Path) -> Result<(Fleet, Vec<Problem>)> {
        let inv_path = root.join(INVENTORY);
        let text = std::fs::read_to_string(&inv_path).with_context(|| {
            format!(
                "cannot read {}: is {} a pi-nixos checkout? pass --flake <dir>",
                inv_path.display(),
                root.display()
            )
        })?;
        if let Some((line, column, msg)) = syntax_error(&text) {
            // Nothing else can be read from it: no host list to compare
            // folders or keys against, so only this is reported.
            bail!("{INVENTORY}:{line}:{column}: not valid TOML: {msg}\n  fix: {SYNTAX_FIX}");
        }
        let (hosts, settings, mut problems) = parse_fleet(&text);
        let keys_text = match std::fs::read_to_string(root.join(KEYS)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e).with_context(|| format!("cannot read {KEYS}")),
        };
        let key_lines = key_lines(&keys_text);
        problems.extend(check_keys(&key_lines, &hosts));
        problems.extend(check_host_dirs(root, &hosts, &declared_names(&text))?);
        Ok((
            Fleet {
                root: root.to_path_buf(),
                hosts,
                settings,
                key_lines,
            },
            problems,
        ))
    }

    pub fn host(&self, name: &str) -> Result<&Host> {
        self.hosts.iter().find(|h| h.name == name).with_context(|| {
            let names: Vec<&str> = self.hosts.iter().map(|h| h.name.as_str()).collect();
            format!(
                "no host named `{name}` in {INVENTORY} (hosts: {}); add one with `cargo xtask new-host`",
                names.join(", ")
            )
        })
    }

    /// The admin keys that are valid public keys.
    pub fn admin_keys(&self) -> Vec<String> {
        self.key_lines
            .iter()
            .filter(|(_, l)| sshkey::parse_line(l).is_ok())
            .map(|(_, l)| l.clone())
            .collect()
    }

    /// The inventory as the flake exposes it (`nix eval --json .#inventory`):
    /// the proof of one source of truth is that both are equal.
    pub fn nix_view(&self) -> serde_json::Value {
        let hosts: BTreeMap<&str, &Host> =
            self.hosts.iter().map(|h| (h.name.as_str(), h)).collect();
        let keys: Vec<&str> = self.key_lines.iter().map(|(_, l)| l.as_str()).collect();
        let host_keys: BTreeMap<&str, Vec<String>> = self
            .hosts
            .iter()
            .filter_map(|h| {
                let text =
                    std::fs::read_to_string(self.root.join(crate::identity::git_path(&h.name)));
                let lines: Vec<String> =
                    key_lines(&text.ok()?).into_iter().map(|(_, l)| l).collect();
                (!lines.is_empty()).then_some((h.name.as_str(), lines))
            })
            .collect();
        serde_json::json!({ "hosts": hosts, "admin_keys": keys, "host_keys": host_keys, "secrets": crate::secrets::nix_view(self), "fleet": self.settings })
    }
}

/// Where `cargo xtask sd` leaves a host's image: `out/<host>/<host>.img.zst`.
pub fn image_path(root: &Path, host: &str) -> PathBuf {
    root.join("out").join(host).join(format!("{host}.img.zst"))
}

/// What `cargo xtask sd` records about that image (JSON: commit, dirty,
/// sha256, size, built): `out/<host>/<host>.img.json`.
pub fn image_info_path(root: &Path, host: &str) -> PathBuf {
    root.join("out").join(host).join(format!("{host}.img.json"))
}

/// 1-based line of a byte offset.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// Parses `hosts/fleet.toml`. Returns the hosts that are complete enough to use
/// and every problem found, in file order.
pub fn parse_inventory(text: &str) -> (Vec<Host>, Vec<Problem>) {
    let (hosts, _, problems) = parse_fleet(text);
    (hosts, problems)
}

/// Parses `hosts/fleet.toml`: the hosts complete enough to use, the
/// `[fleet]` settings, and every problem found, in file order.
pub fn parse_fleet(text: &str) -> (Vec<Host>, FleetSettings, Vec<Problem>) {
    let f = INVENTORY;
    let mut problems = Vec::new();
    let mut settings = FleetSettings::default();
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc.into_inner(),
        Err(_) => {
            problems.extend(syntax_problem(text));
            return (Vec::new(), settings, problems);
        }
    };
    let mut hosts = Vec::new();
    let mut country_line = None;
    for (key, value) in doc.iter() {
        let line = line_of(text, key.span().start);
        if key.get_ref().as_ref() == "fleet" {
            match value.get_ref().as_table() {
                Some(table) => {
                    country_line = parse_settings(text, table, &mut settings, &mut problems);
                }
                None => problems.push(Problem::new(
                    f,
                    line,
                    "`fleet` must be a table",
                    "write the fleet's settings under a [fleet] header",
                )),
            }
            continue;
        }
        if key.get_ref().as_ref() != "host" {
            problems.push(Problem::new(
                f,
                line,
                format!("unknown top-level key `{}`", key.get_ref()),
                "hosts are listed as [[host]] tables and fleet settings under [fleet]; remove or rename this key",
            ));
            continue;
        }
        let Some(array) = value.get_ref().as_array() else {
            problems.push(Problem::new(
                f,
                line,
                "`host` must be an array of tables",
                "write each host as a [[host]] table",
            ));
            continue;
        };
        for item in array.iter() {
            let line = line_of(text, item.span().start);
            match item.get_ref().as_table() {
                Some(table) => {
                    if let Some(h) = parse_host(text, line, table, &mut problems) {
                        hosts.push(h);
                    }
                }
                None => problems.push(Problem::new(
                    f,
                    line,
                    "a host must be a table",
                    "write each host as a [[host]] table",
                )),
            }
        }
    }
    problems.extend(check_unique(&hosts));
    problems.extend(check_wifi_country(&hosts, &settings, country_line));
    problems.extend(crate::ci::cache_pair_problems(text, &settings));
    problems.extend(check_monitoring(&hosts, &settings));
    problems.sort_by_key(|p| p.line);
    (hosts, settings, problems)
}

/// The `[fleet]` table. Returns the line of `wifi_country` when present.
fn parse_settings(
    text: &str,
    t: &DeTable<'_>,
    settings: &mut FleetSettings,
    problems: &mut Vec<Problem>,
) -> Option<usize> {
    let f = INVENTORY;
    let mut country_line = None;
    for (key, value) in t.iter() {
        let k = key.get_ref().as_ref();
        let line = line_of(text, value.span().start);
        if k == "cache" || k == "cache_key" {
            parse_cache_setting(k, line, value.get_ref(), settings, problems);
            continue;
        }
        if k == "monitoring" {
            settings.monitoring_line = line;
            match value.get_ref().as_str() {
                Some(m) => settings.monitoring = Some(m.to_string()),
                None => problems.push(Problem::new(
                    f,
                    line,
                    "`monitoring` must be a host's name (a string)",
                    "write e.g. `monitoring = \"rpi-box-01\"`: the host that runs Prometheus and Grafana",
                )),
            }
            continue;
        }
        if k != "wifi_country" {
            problems.push(Problem::new(
                f,
                line_of(text, key.span().start),
                format!("unknown key `{k}` in [fleet]"),
                format!("[fleet] may have: {}", FLEET_KEYS.join(", ")),
            ));
            continue;
        }
        country_line = Some(line);
        match value.get_ref().as_str() {
            Some(c) => match check_country(c) {
                Ok(()) => settings.wifi_country = Some(c.to_string()),
                Err(fix) => problems.push(Problem::new(
                    f,
                    line,
                    format!("`{c}` is not an ISO 3166-1 alpha-2 country code"),
                    fix,
                )),
            },
            None => problems.push(Problem::new(
                f,
                line,
                format!(
                    "`wifi_country` must be a string, not {}",
                    value.get_ref().type_str()
                ),
                "write e.g. `wifi_country = \"GB\"`",
            )),
        }
    }
    country_line
}

/// `cache = "https://…"` (a substituter URL) or `cache_key = "name:base64"`.
fn parse_cache_setting(
    k: &str,
    line: usize,
    value: &DeValue<'_>,
    settings: &mut FleetSettings,
    problems: &mut Vec<Problem>,
) {
    let example = if k == "cache" {
        "write e.g. `cache = \"https://my-fleet.cachix.org\"` (Cachix) or `cache = \"https://attic.example.org/my-fleet\"` (Attic)"
    } else {
        "write the cache's public key, e.g. `cache_key = \"my-fleet.cachix.org-1:…=\"`"
    };
    let Some(v) = value.as_str() else {
        problems.push(Problem::new(
            INVENTORY,
            line,
            format!("`{k}` must be a string, not {}", value.type_str()),
            example,
        ));
        return;
    };
    let ok = if k == "cache" {
        crate::ci::cache_url_ok(v)
    } else {
        crate::ci::cache_key_ok(v)
    };
    if !ok {
        problems.push(Problem::new(
            INVENTORY,
            line,
            format!(
                "`{k} = \"{v}\"` is not a valid binary cache {}",
                if k == "cache" { "URL" } else { "public key" }
            ),
            example,
        ));
        return;
    }
    if k == "cache" {
        settings.cache = Some(v.to_string());
    } else {
        settings.cache_key = Some(v.to_string());
    }
}

/// `[fleet] monitoring` names a host of the fleet.
fn check_monitoring(hosts: &[Host], settings: &FleetSettings) -> Option<Problem> {
    let m = settings.monitoring.as_ref()?;
    if let Some(h) = hosts.iter().find(|h| &h.name == m) {
        // Every Pi's firewall lets only this address read metrics.
        let ip = h
            .static_ipv4
            .as_ref()
            .map_or(h.address.as_str(), |s| s.address.as_str());
        if ip.parse::<std::net::Ipv4Addr>().is_ok() {
            return None;
        }
        return Some(Problem::new(
            INVENTORY,
            settings.monitoring_line,
            format!(
                "the monitoring host `{m}` has address `{}`, but every Pi's firewall lets only the monitoring host's IPv4 address read its metrics",
                h.address
            ),
            format!(
                "give `{m}` a static address (`address = \"192.0.2.10/24\"` with `gateway` and `dns`) or an IP address its router reserves"
            ),
        ));
    }
    let names: Vec<&str> = hosts.iter().map(|h| h.name.as_str()).collect();
    Some(Problem::new(
        INVENTORY,
        settings.monitoring_line,
        format!("`monitoring = \"{m}\"` names no host of the fleet"),
        format!(
            "name one of the [[host]] tables ({}), a Pi 4 with memory to spare for Prometheus and Grafana",
            names.join(", ")
        ),
    ))
}

/// A Wi-Fi host needs the fleet's regulatory domain.
fn check_wifi_country(
    hosts: &[Host],
    settings: &FleetSettings,
    country_line: Option<usize>,
) -> Option<Problem> {
    let first = hosts.iter().find(|h| h.wifi.is_some())?;
    if settings.wifi_country.is_some() || country_line.is_some() {
        // Set, or set wrongly (reported where it is written).
        return None;
    }
    Some(Problem::new(
        INVENTORY,
        first.line,
        format!(
            "host `{}` joins Wi-Fi, but the fleet has no Wi-Fi country (regulatory domain)",
            first.name
        ),
        "add `[fleet]` with `wifi_country = \"GB\"` (your country's ISO 3166-1 alpha-2 code) at the top of hosts/fleet.toml; wpa_supplicant gets it as `country=`",
    ))
}

/// ISO 3166-1 alpha-2: the officially assigned codes.
const ISO_3166_ALPHA2: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ \
BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ \
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ \
DE DJ DK DM DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR \
GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU \
ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ \
LA LB LC LI LK LR LS LT LU LV LY \
MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ \
NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA \
RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ \
TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ \
VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

/// `Ok` for an assigned ISO 3166-1 alpha-2 code, else the fix.
pub fn check_country(c: &str) -> std::result::Result<(), String> {
    let assigned = |c: &str| ISO_3166_ALPHA2.split_whitespace().any(|a| a == c);
    if assigned(c) {
        return Ok(());
    }
    let upper = c.to_ascii_uppercase();
    Err(if upper == "UK" {
        "the code of the United Kingdom is \"GB\"".to_string()
    } else if upper != c && assigned(&upper) {
        format!("write it in capitals: \"{upper}\"")
    } else {
        "write the two-letter code of the country the Pis are in, e.g. \"GB\", \"DE\", \"US\""
            .to_string()
    })
}

/// A name in mDNS's `.local` domain (any case, trailing dot allowed).
pub fn is_mdns_name(a: &str) -> bool {
    let a = a.trim_end_matches('.').to_ascii_lowercase();
    a.strip_suffix(".local").is_some_and(|l| !l.is_empty())
}

const SYNTAX_FIX: &str = "correct the syntax there (strings need double quotes: `model = \"pi4\"`); nothing else in the file is read until it parses";

/// [`syntax_error`] as a problem of the fleet definition.
pub fn syntax_problem(text: &str) -> Option<Problem> {
    let (line, column, msg) = syntax_error(text)?;
    Some(Problem::new(
        INVENTORY,
        line,
        format!("not valid TOML (column {column}): {msg}"),
        SYNTAX_FIX,
    ))
}

/// The TOML syntax error of `hosts/fleet.toml`, if any: line, column (both
/// 1-based) and the parser's message.
pub fn syntax_error(text: &str) -> Option<(usize, usize, String)> {
    let e = DeTable::parse(text).err()?;
    let start = e.span().map_or(0, |s| s.start.min(text.len()));
    let before = text.get(..start).unwrap_or(text);
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    Some((line_of(text, start), column, e.message().trim().to_string()))
}

fn parse_host(
    text: &str,
    header: usize,
    t: &DeTable<'_>,
    problems: &mut Vec<Problem>,
) -> Option<Host> {
    let f = INVENTORY;
    let get = |k: &str| {
        t.iter()
            .find(|(key, _)| key.get_ref().as_ref() == k)
            .map(|(_, v)| v)
    };
    let line_at = |v: &toml::Spanned<DeValue<'_>>| line_of(text, v.span().start);

    for (key, _) in t.iter() {
        let k = key.get_ref().as_ref();
        if !HOST_KEYS.contains(&k) {
            let hint = HOST_KEYS
                .iter()
                .find(|known| edit_distance(known, k) <= 2)
                .map(|known| format!("did you mean `{known}`? "))
                .unwrap_or_default();
            problems.push(Problem::new(
                f,
                line_of(text, key.span().start),
                format!("unknown key `{k}`"),
                format!("{hint}a host may have: {}", HOST_KEYS.join(", ")),
            ));
        }
    }

    let mut string = |k: &str, required: bool| -> Option<(String, usize)> {
        match get(k) {
            None => {
                if required {
                    problems.push(Problem::new(
                        f,
                        header,
                        format!("host has no `{k}`"),
                        format!("add `{k} = \"…\"`"),
                    ));
                }
                None
            }
            Some(v) => match v.get_ref().as_str() {
                Some(s) => Some((s.to_string(), line_at(v))),
                None => {
                    problems.push(Problem::new(
                        f,
                        line_at(v),
                        format!("`{k}` must be a string, not {}", v.get_ref().type_str()),
                        format!("write `{k} = \"…\"`"),
                    ));
                    None
                }
            },
        }
    };
    let name = string("name", true);
    let model = string("model", true);
    let address = string("address", true);
    let user = string("user", false);
    let build_host = string("build_host", false);
    let wifi = string("wifi", false);
    let gateway = string("gateway", false);
    let profile = string("profile", false);

    let mut ok = true;
    let label = name
        .as_ref()
        .map(|(n, _)| n.as_str())
        .unwrap_or("?")
        .to_string();
    if let Some((n, l)) = &name {
        if let Err(why) = check_hostname(n) {
            problems.push(Problem::new(
                f,
                *l,
                format!("`{n}` is not a valid host name: {why}"),
                "use 1-63 letters, digits and hyphens, not starting or ending with a hyphen (RFC 1123)",
            ));
            ok = false;
        } else if n.ends_with("-sd") {
            problems.push(Problem::new(
                f,
                *l,
                format!("`{n}` ends in `-sd`, which the flake reserves for SD image names"),
                "choose a name that does not end in `-sd`",
            ));
            ok = false;
        }
    }
    let parsed_model = match &model {
        Some((m, l)) => match Model::parse(m) {
            Some(m) => Some(m),
            None => {
                problems.push(Problem::new(
                    f,
                    *l,
                    format!("host `{label}`: unknown model `{m}`"),
                    "use one of: pi3, pi4, zero2w",
                ));
                None
            }
        },
        None => None,
    };
    let parsed_profile = match &profile {
        None => Some(Profile::default()),
        Some((p, l)) => match Profile::parse(p) {
            Some(p) => Some(p),
            None => {
                problems.push(Problem::new(
                    f,
                    *l,
                    format!("host `{label}`: unknown profile `{p}`"),
                    "use `lean` (the default: only what the fleet's Pis use) or `generic` (nixpkgs' own SD image module, the way back; documentation/boot.md)",
                ));
                ok = false;
                None
            }
        },
    };
    let dns = string_list(text, get("dns"), &label, "dns", problems);
    let mut static_ipv4 = None;
    let mut ssh_address = address.as_ref().map(|(a, _)| a.clone());
    if let Some((a, l)) = &address {
        if a.contains('/') {
            match parse_static(
                a,
                gateway.as_ref(),
                dns.as_ref(),
                get("dns").is_some(),
                header,
            ) {
                Ok(s) => {
                    ssh_address = Some(s.address.clone());
                    static_ipv4 = Some(s);
                }
                Err(p) => {
                    problems.extend(p.into_iter().map(|(line, message, fix)| {
                        Problem::new(
                            f,
                            if line == 0 { *l } else { line },
                            format!("host `{label}`: {message}"),
                            fix,
                        )
                    }));
                    ok = false;
                }
            }
        } else if !valid_address(a) {
            problems.push(Problem::new(
                f,
                *l,
                format!("host `{label}`: `{a}` is not an IP address or DNS name"),
                "write the address SSH reaches the Pi at, e.g. \"rpi-box-01.local\" or \"192.0.2.41\"",
            ));
            ok = false;
        } else {
            if let Some((n, _)) = &name
                && is_mdns_name(a)
                && !a
                    .trim_end_matches('.')
                    .eq_ignore_ascii_case(&format!("{n}.local"))
            {
                problems.push(Problem::new(
                    f,
                    *l,
                    format!(
                        "host `{label}`: `{a}` is not the name this Pi publishes over mDNS, which is `{n}.local`"
                    ),
                    format!("write `address = \"{n}.local\"`, or an IP address or DNS name that reaches the Pi"),
                ));
                ok = false;
            }
            for (key, value) in [
                ("gateway", gateway.as_ref().map(|g| g.1)),
                ("dns", dns.as_ref().map(|d| d.1)),
            ] {
                if let Some(line) = value {
                    problems.push(Problem::new(
                        f,
                        line,
                        format!("host `{label}`: `{key}` only applies to a static address"),
                        "write `address` with its prefix length, e.g. \"192.0.2.10/24\", for the Pi to set it itself; or remove this line (DHCP then gives both)",
                    ));
                    ok = false;
                }
            }
        }
    }
    if let Some((u, l)) = &user
        && !valid_user(u)
    {
        problems.push(Problem::new(
            f,
            *l,
            format!("host `{label}`: `{u}` is not a valid user name"),
            "use lowercase letters, digits, `_` and `-`, starting with a letter or `_`",
        ));
        ok = false;
    }
    if let Some((s, l)) = &wifi
        && (s.is_empty() || s.len() > 32)
    {
        problems.push(Problem::new(
            f,
            *l,
            format!("host `{label}`: Wi-Fi SSID must be 1 to 32 bytes"),
            "write the network name as the Pi should see it",
        ));
        ok = false;
    }
    if let (Some(m), None) = (parsed_model, &wifi)
        && m.wifi_only()
    {
        problems.push(Problem::new(
                f,
                header,
                format!("host `{label}` is a {m}, which has no Ethernet: its first boot needs Wi-Fi"),
                format!("add `wifi = \"<SSID>\"`, then `cargo xtask wifi {label}` (the password becomes an age secret only that Pi can read)"),
            ));
    }

    let port = match get("port") {
        None => 22,
        Some(v) => match v
            .get_ref()
            .as_integer()
            .and_then(|i| i64::from_str_radix(i.as_str(), i.radix()).ok())
        {
            Some(p) if (1..=65535).contains(&p) => p as u16,
            _ => {
                problems.push(Problem::new(
                    f,
                    line_at(v),
                    format!("host `{label}`: `port` must be a whole number from 1 to 65535"),
                    "write e.g. `port = 22`",
                ));
                ok = false;
                22
            }
        },
    };

    let mut tags = Vec::new();
    if let Some(v) = get("tags") {
        match v.get_ref().as_array() {
            Some(items) => {
                for item in items.iter() {
                    match item.get_ref().as_str() {
                        Some(s) if valid_tag(s) => tags.push(s.to_string()),
                        _ => problems.push(Problem::new(
                            f,
                            line_at(item),
                            format!("host `{label}`: a tag must be a string of letters, digits, `-` and `_`"),
                            "write e.g. `tags = [\"docker\", \"garage\"]`",
                        )),
                    }
                }
            }
            None => problems.push(Problem::new(
                f,
                line_at(v),
                format!("host `{label}`: `tags` must be a list of strings"),
                "write e.g. `tags = [\"docker\", \"garage\"]`",
            )),
        }
    }

    if !ok {
        return None;
    }
    Some(Host {
        name: name?.0,
        model: parsed_model?,
        address: ssh_address?,
        user: user.map(|u| u.0).unwrap_or_else(|| "root".to_string()),
        port,
        tags,
        build_host: build_host.map(|b| b.0),
        wifi: wifi.map(|w| w.0),
        profile: parsed_profile?,
        static_ipv4,
        line: header,
    })
}

/// A list of strings (`dns = ["…"]`) and its line; problems reported.
fn string_list(
    text: &str,
    value: Option<&toml::Spanned<DeValue<'_>>>,
    label: &str,
    key: &str,
    problems: &mut Vec<Problem>,
) -> Option<(Vec<String>, usize)> {
    let v = value?;
    let line = line_of(text, v.span().start);
    let fix = format!("write e.g. `{key} = [\"192.0.2.1\"]`");
    let Some(items) = v.get_ref().as_array() else {
        problems.push(Problem::new(
            INVENTORY,
            line,
            format!("host `{label}`: `{key}` must be a list of strings"),
            fix,
        ));
        return None;
    };
    let mut out = Vec::new();
    for item in items.iter() {
        match item.get_ref().as_str() {
            Some(s) => out.push(s.to_string()),
            None => {
                problems.push(Problem::new(
                    INVENTORY,
                    line_of(text, item.span().start),
                    format!("host `{label}`: `{key}` must be a list of strings"),
                    fix,
                ));
                return None;
            }
        }
    }
    Some((out, line))
}

/// A problem of a static address: (line, 0 for the address's own line;
/// message; fix).
type StaticProblem = (usize, String, String);

/// `address = "a.b.c.d/len"` with `gateway` and `dns`: the static IPv4
/// configuration, or every problem with it.
pub fn parse_static(
    address: &str,
    gateway: Option<&(String, usize)>,
    dns: Option<&(Vec<String>, usize)>,
    dns_written: bool,
    header: usize,
) -> std::result::Result<StaticIpv4, Vec<StaticProblem>> {
    let mut problems: Vec<StaticProblem> = Vec::new();
    let (ip, len) = address.split_once('/').unwrap_or((address, ""));
    let ip: Option<Ipv4Addr> = ip.parse().ok();
    let len: Option<u8> = (!len.starts_with('0') || len == "0")
        .then(|| len.parse().ok())
        .flatten()
        .filter(|l| (1..=32).contains(l));
    let (Some(ip), Some(len)) = (ip, len) else {
        problems.push((
            0,
            format!("`{address}` is not an IPv4 address with a prefix length"),
            "write a static address as \"192.0.2.10/24\" (IPv4, prefix length 1 to 32), or the address alone for DHCP".to_string(),
        ));
        return Err(problems);
    };
    let mask = u32::MAX << (32 - u32::from(len));
    let net = u32::from(ip) & mask;
    if len <= 30 && (u32::from(ip) == net || u32::from(ip) == net | !mask) {
        problems.push((
            0,
            format!("{ip} is the network or broadcast address of {address}"),
            "choose a host address inside the network, e.g. the .10 of a /24".to_string(),
        ));
    }
    match gateway {
        None => problems.push((
            header,
            format!("static address {address} has no `gateway`"),
            "add `gateway = \"…\"`: the router's address on that network (the Pi needs it to reach the binary cache)".to_string(),
        )),
        Some((g, line)) => match g.parse::<Ipv4Addr>() {
            Err(_) => problems.push((
                *line,
                format!("gateway `{g}` is not an IPv4 address"),
                "write the router's address, e.g. `gateway = \"192.0.2.1\"`".to_string(),
            )),
            Ok(g) if u32::from(g) & mask != net || g == ip => problems.push((
                *line,
                format!("gateway {g} is not another address on the network of {address}"),
                "write the router's address on the Pi's network (or fix the prefix length)".to_string(),
            )),
            Ok(_) => {}
        },
    }
    match dns {
        // Written, but not as a list: reported where it is.
        None if dns_written => {}
        None => problems.push((
            header,
            format!("static address {address} has no `dns`"),
            "add `dns = [\"…\"]`: the name servers the Pi uses, often the router's address"
                .to_string(),
        )),
        Some((list, line)) => {
            if list.is_empty() {
                problems.push((
                    *line,
                    "`dns` is empty".to_string(),
                    "list at least one name server, e.g. `dns = [\"192.0.2.1\"]`".to_string(),
                ));
            }
            for d in list.iter().filter(|d| d.parse::<IpAddr>().is_err()) {
                problems.push((
                    *line,
                    format!("name server `{d}` is not an IP address"),
                    "write name servers as IP addresses".to_string(),
                ));
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    Ok(StaticIpv4 {
        address: ip.to_string(),
        prefix_length: len,
        gateway: gateway.map(|g| g.0.clone()).unwrap_or_default(),
        dns: dns.map(|d| d.0.clone()).unwrap_or_default(),
    })
}

fn check_unique(hosts: &[Host]) -> Vec<Problem> {
    let mut problems = Vec::new();
    for (i, h) in hosts.iter().enumerate() {
        if let Some(first) = hosts[..i].iter().find(|o| o.name == h.name) {
            problems.push(Problem::new(
                INVENTORY,
                h.line,
                format!(
                    "host name `{}` is used twice (first at line {})",
                    h.name, first.line
                ),
                "give every host its own name",
            ));
        }
        if let Some(first) = hosts[..i]
            .iter()
            .find(|o| o.address.eq_ignore_ascii_case(&h.address) && o.port == h.port)
        {
            problems.push(Problem::new(
                INVENTORY,
                h.line,
                format!(
                    "address {}:{} of `{}` is already used by `{}` (line {})",
                    h.address, h.port, h.name, first.name, first.line
                ),
                "give every host its own address (or its own SSH port)",
            ));
        }
    }
    problems
}

/// Non-empty, non-comment lines of an authorized_keys text, trimmed.
pub fn key_lines(text: &str) -> Vec<(usize, String)> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim().to_string()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .collect()
}

fn check_keys(lines: &[(usize, String)], hosts: &[Host]) -> Vec<Problem> {
    let mut problems = Vec::new();
    let mut valid = 0;
    for (n, l) in lines {
        match sshkey::parse_line(l) {
            Ok(_) => valid += 1,
            Err(why) => problems.push(Problem::new(
                KEYS,
                *n,
                format!("not a usable SSH public key: {why}"),
                "delete this line and run `cargo xtask add-key [PATH.pub]`",
            )),
        }
    }
    if valid == 0 {
        for h in hosts {
            problems.push(Problem::new(
                INVENTORY,
                h.line,
                format!(
                    "host `{}`: the image would be unreachable: no admin SSH key in {KEYS}",
                    h.name
                ),
                "run `cargo xtask add-key` (defaults to ~/.ssh/id_ed25519.pub)",
            ));
        }
    }
    problems
}

/// Every `name` under `[[host]]`, also of hosts that have other problems.
fn declared_names(text: &str) -> Vec<String> {
    let Ok(doc) = DeTable::parse(text) else {
        return Vec::new();
    };
    let doc = doc.into_inner();
    let hosts = doc.iter().find(|(k, _)| k.get_ref().as_ref() == "host");
    let Some(items) = hosts.and_then(|(_, v)| v.get_ref().as_array()) else {
        return Vec::new();
    };
    items
        .iter()
        .filter_map(|t| {
            t.get_ref()
                .as_table()?
                .iter()
                .find(|(k, _)| k.get_ref().as_ref() == "name")
        })
        .filter_map(|(_, v)| v.get_ref().as_str().map(str::to_string))
        .collect()
}

fn check_host_dirs(root: &Path, hosts: &[Host], names: &[String]) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    for h in hosts {
        let rel = format!("hosts/{}/default.nix", h.name);
        if !root.join(&rel).is_file() {
            problems.push(Problem::new(
                INVENTORY,
                h.line,
                format!("host `{}` has no {rel}", h.name),
                "create it (`cargo xtask new-host` writes one) or remove the host".to_string(),
            ));
        }
    }
    let dir = root.join("hosts");
    let mut entries: Vec<_> = std::fs::read_dir(&dir)
        .with_context(|| format!("cannot list {}", dir.display()))?
        .collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        if !entry.file_type()?.is_dir() {
            continue;
        }
        let name = entry.file_name().to_string_lossy().to_string();
        if !names.contains(&name) {
            problems.push(Problem::new(
                &format!("hosts/{name}"),
                0,
                format!("folder hosts/{name} has no [[host]] entry in {INVENTORY}"),
                format!("add the host to {INVENTORY} or delete the folder"),
            ));
        }
    }
    Ok(problems)
}

/// RFC 1123 label.
pub fn check_hostname(name: &str) -> std::result::Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > 63 {
        return Err("it is longer than 63 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') {
        return Err("only letters, digits and hyphens are allowed");
    }
    if name.starts_with('-') || name.ends_with('-') {
        return Err("it starts or ends with a hyphen");
    }
    Ok(())
}

pub fn valid_address(a: &str) -> bool {
    if a.parse::<IpAddr>().is_ok() {
        return true;
    }
    a.len() <= 253
        && a.trim_end_matches('.')
            .split('.')
            .all(|l| check_hostname(l).is_ok())
}

pub fn valid_user(u: &str) -> bool {
    let mut bytes = u.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && u.len() <= 32
}

pub fn valid_tag(t: &str) -> bool {
    !t.is_empty()
        && t.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur.push(sub.min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[fleet]
wifi_country = "GB"

[[host]]
name = "rpi-box-01"
model = "pi4"
address = "192.168.1.41"
tags = ["docker"]

[[host]]
name = "rpi-zero-01"
model = "zero2w"
address = "rpi-zero-01.lan"
user = "pi"
port = 2222
wifi = "home"
"#;

    fn problems(text: &str) -> Vec<Problem> {
        parse_inventory(text).1
    }

    fn one(text: &str) -> Problem {
        let p = problems(text);
        assert_eq!(p.len(), 1, "expected one problem, got {p:#?}");
        p.into_iter().next().unwrap()
    }

    #[test]
    fn good_inventory_parses_with_defaults() {
        let (hosts, p) = parse_inventory(GOOD);
        assert!(p.is_empty(), "{p:#?}");
        assert_eq!(hosts.len(), 2);
        assert_eq!(hosts[0].user, "root");
        assert_eq!(hosts[0].port, 22);
        assert_eq!(hosts[0].line, 5);
        assert_eq!(hosts[0].tags, vec!["docker"]);
        assert_eq!(hosts[1].model, Model::Zero2w);
        assert_eq!(hosts[1].port, 2222);
        assert_eq!(hosts[1].destination(), "pi@rpi-zero-01.lan");
        assert_eq!(hosts[1].wifi.as_deref(), Some("home"));
    }

    #[test]
    fn syntax_error_has_line() {
        let p = one("[[host]]\nname = \"a\"\nmodel = pi4\n");
        assert_eq!(p.line, 3);
        assert!(p.message.starts_with("not valid TOML (column 9)"), "{p}");
        assert!(p.fix.starts_with("correct the syntax there"), "{p}");
        let (line, column, _) = syntax_error("a = 1\n  [[host]\n").unwrap();
        assert_eq!((line, column), (2, 10));
    }

    #[test]
    fn unknown_key_suggests_the_right_one() {
        let p = one(
            "[[host]]\nname = \"a\"\nmodel = \"pi4\"\naddress = \"10.0.0.1\"\nadress = \"x\"\n",
        );
        assert_eq!(p.line, 5);
        assert_eq!(p.message, "unknown key `adress`");
        assert!(p.fix.contains("did you mean `address`?"), "{p}");
    }

    #[test]
    fn unknown_top_level_key() {
        let p = one("hots = 1\n");
        assert_eq!(p.line, 1);
        assert!(p.message.contains("unknown top-level key `hots`"));
    }

    #[test]
    fn bad_model() {
        let p = one("[[host]]\nname = \"a\"\nmodel = \"pi5\"\naddress = \"10.0.0.1\"\n");
        assert_eq!(p.line, 3);
        assert!(p.message.contains("unknown model `pi5`"), "{p}");
        assert!(p.fix.contains("pi3, pi4, zero2w"));
    }

    #[test]
    fn invalid_hostname() {
        let p = one("[[host]]\nname = \"rpi_box\"\nmodel = \"pi4\"\naddress = \"10.0.0.1\"\n");
        assert_eq!(p.line, 2);
        assert!(p.message.contains("not a valid host name"), "{p}");
        let p = one("[[host]]\nname = \"-x\"\nmodel = \"pi4\"\naddress = \"10.0.0.1\"\n");
        assert!(p.message.contains("hyphen"), "{p}");
    }

    #[test]
    fn sd_suffix_is_reserved() {
        let p = one("[[host]]\nname = \"box-sd\"\nmodel = \"pi4\"\naddress = \"10.0.0.1\"\n");
        assert!(p.message.contains("-sd"), "{p}");
    }

    #[test]
    fn missing_fields_point_at_the_header() {
        let p = problems("\n[[host]]\nname = \"a\"\n");
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(p.iter().all(|p| p.line == 2));
        assert!(p[0].message.contains("no `model`"));
        assert!(p[1].message.contains("no `address`"));
    }

    #[test]
    fn wrong_type() {
        let p = one("[[host]]\nname = \"a\"\nmodel = \"pi4\"\naddress = 10\n");
        assert_eq!(p.line, 4);
        assert!(p.message.contains("must be a string, not integer"), "{p}");
    }

    #[test]
    fn bad_port() {
        let p =
            one("[[host]]\nname = \"a\"\nmodel = \"pi4\"\naddress = \"10.0.0.1\"\nport = 70000\n");
        assert_eq!(p.line, 5);
        assert!(p.message.contains("port"));
    }

    #[test]
    fn bad_address_and_user_and_tag() {
        let p = problems(
            "[[host]]\nname = \"a\"\nmodel = \"pi4\"\naddress = \"not an address\"\nuser = \"Root\"\ntags = [\"a b\"]\n",
        );
        let lines: Vec<usize> = p.iter().map(|p| p.line).collect();
        assert_eq!(lines, vec![4, 5, 6], "{p:#?}");
    }

    #[test]
    fn duplicate_names_and_addresses() {
        let text = "[[host]]\nname = \"a\"\nmodel = \"pi4\"\naddress = \"10.0.0.1\"\n\n[[host]]\nname = \"a\"\nmodel = \"pi3\"\naddress = \"10.0.0.1\"\n";
        let p = problems(text);
        assert_eq!(p.len(), 2, "{p:#?}");
        assert!(p[0].message.contains("used twice (first at line 1)"));
        assert!(p[1].message.contains("already used by `a`"));
        assert!(p.iter().all(|p| p.line == 6));
    }

    #[test]
    fn same_address_other_port_is_fine() {
        let text = "[[host]]\nname = \"a\"\nmodel = \"pi4\"\naddress = \"h.lan\"\n[[host]]\nname = \"b\"\nmodel = \"pi4\"\naddress = \"h.lan\"\nport = 2222\n";
        assert!(problems(text).is_empty());
    }

    #[test]
    fn zero2w_needs_wifi() {
        let p = one("[[host]]\nname = \"z\"\nmodel = \"zero2w\"\naddress = \"10.0.0.9\"\n");
        assert_eq!(p.line, 1);
        assert!(p.message.contains("no Ethernet"), "{p}");
    }

    #[test]
    fn no_keys_makes_every_host_unreachable() {
        let (hosts, _) = parse_inventory(GOOD);
        let p = check_keys(&key_lines("# nothing yet\n"), &hosts);
        assert_eq!(p.len(), 2);
        assert!(p[0].message.contains("the image would be unreachable"));
        assert!(p[0].fix.contains("cargo xtask add-key"));
        assert_eq!(p[1].line, hosts[1].line);
    }

    #[test]
    fn placeholder_key_is_reported_with_its_line() {
        let (hosts, _) = parse_inventory(GOOD);
        let p = check_keys(
            &key_lines("# keys\n\nssh-ed25519 AAAA...your-public-key\n"),
            &hosts,
        );
        assert_eq!(p[0].file, KEYS);
        assert_eq!(p[0].line, 3);
        assert_eq!(p.len(), 3, "a placeholder is no key: {p:#?}");
    }

    #[test]
    fn hostname_rules() {
        assert!(check_hostname("rpi-box-01").is_ok());
        assert!(check_hostname(&"a".repeat(64)).is_err());
        assert!(valid_address("fe80::1"));
        assert!(valid_address("pi.example.org"));
        assert!(!valid_address("a..b"));
    }

    fn host(extra: &str) -> String {
        format!("[[host]]\nname = \"a\"\nmodel = \"pi4\"\n{extra}")
    }

    #[test]
    fn profile_defaults_to_lean_and_may_be_generic() {
        let (hosts, p) = parse_inventory(GOOD);
        assert!(p.is_empty(), "{p:#?}");
        assert!(hosts.iter().all(|h| h.profile == Profile::Lean));
        let (hosts, p) = parse_inventory(&host("address = \"a.local\"\nprofile = \"generic\"\n"));
        assert!(p.is_empty(), "{p:#?}");
        assert_eq!(hosts[0].profile, Profile::Generic);
        let (hosts, _) = parse_inventory(&host("address = \"a.local\"\nprofile = \"lean\"\n"));
        assert_eq!(hosts[0].profile, Profile::Lean);
        // Nix sees the same field (lib/inventory.nix writes "lean" by default).
        let json = serde_json::to_value(&hosts[0]).unwrap();
        assert_eq!(json["profile"], "lean");
    }

    #[test]
    fn unknown_profile_has_its_line_and_the_choices() {
        let p = one(&host("address = \"a.local\"\nprofile = \"minimal\"\n"));
        assert_eq!((p.file.as_str(), p.line), (INVENTORY, 5));
        assert_eq!(p.message, "host `a`: unknown profile `minimal`");
        assert!(p.fix.starts_with("use `lean` (the default"), "{p}");
        assert!(p.fix.contains("`generic`"), "{p}");
        let p = one(&host("address = \"a.local\"\nprofile = 1\n"));
        assert_eq!(p.line, 5);
        assert_eq!(p.message, "`profile` must be a string, not integer");
        let p = one(&host("address = \"a.local\"\nprofil = \"generic\"\n"));
        assert_eq!(p.message, "unknown key `profil`");
        assert!(p.fix.starts_with("did you mean `profile`?"), "{p}");
    }

    #[test]
    fn wifi_needs_the_fleet_country() {
        let text =
            "[[host]]\nname = \"z\"\nmodel = \"zero2w\"\naddress = \"z.local\"\nwifi = \"home\"\n";
        let p = one(text);
        assert_eq!(p.line, 1);
        assert!(p.message.contains("no Wi-Fi country"), "{p}");
        assert!(p.fix.contains("wifi_country = \"GB\""), "{p}");
        let (hosts, settings, p) =
            parse_fleet(&format!("[fleet]\nwifi_country = \"DE\"\n\n{text}"));
        assert!(p.is_empty(), "{p:#?}");
        assert_eq!(settings.wifi_country.as_deref(), Some("DE"));
        assert_eq!(hosts[0].line, 4);
        // Without Wi-Fi hosts the country is not needed.
        assert!(problems(&host("address = \"a.local\"\n")).is_empty());
    }

    #[test]
    fn monitoring_names_a_host() {
        let host = "[[host]]\nname = \"a\"\nmodel = \"pi4\"\naddress = \"a.local\"\n";
        let (_, settings, problems) =
            parse_fleet(&format!("[fleet]\nmonitoring = \"a\"\n\n{host}"));
        assert_eq!(problems.len(), 1, "a .local address: {problems:?}");
        assert!(problems[0].message.contains("IPv4"), "{}", problems[0]);
        let fixed = host.replace("a.local", "192.0.2.10");
        let (_, _, problems) = parse_fleet(&format!("[fleet]\nmonitoring = \"a\"\n\n{fixed}"));
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(settings.monitoring.as_deref(), Some("a"));
        let (_, _, problems) = parse_fleet(&format!("[fleet]\nmonitoring = \"b\"\n\n{host}"));
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, 2);
        assert!(problems[0].fix.contains("(a)"), "{}", problems[0]);
    }

    #[test]
    fn wifi_country_must_be_iso_3166_alpha2() {
        for (code, fix) in [
            ("UK", "United Kingdom is \"GB\""),
            ("gb", "capitals: \"GB\""),
            ("XX", "two-letter code"),
            ("GBR", "two-letter code"),
        ] {
            let p = one(&format!("[fleet]\nwifi_country = \"{code}\"\n"));
            assert_eq!(p.line, 2);
            assert!(p.message.contains("not an ISO 3166-1 alpha-2"), "{p}");
            assert!(p.fix.contains(fix), "{code}: {p}");
        }
        assert!(check_country("GB").is_ok() && check_country("US").is_ok());
        assert_eq!(ISO_3166_ALPHA2.split_whitespace().count(), 249);
        let p = one("[fleet]\nwifi_country = 44\n");
        assert!(p.message.contains("must be a string"), "{p}");
        let p = one("[fleet]\ncountry = \"GB\"\n");
        assert!(
            p.message.contains("unknown key `country` in [fleet]"),
            "{p}"
        );
        // A wrong country is reported once, where it is written.
        let p = one(
            "[fleet]\nwifi_country = \"UK\"\n[[host]]\nname = \"z\"\nmodel = \"zero2w\"\naddress = \"z.local\"\nwifi = \"w\"\n",
        );
        assert_eq!(p.line, 2);
    }

    #[test]
    fn static_address_with_gateway_and_dns() {
        let (hosts, p) = parse_inventory(&host(
            "address = \"192.0.2.10/24\"\ngateway = \"192.0.2.1\"\ndns = [\"192.0.2.1\", \"2001:db8::1\"]\n",
        ));
        assert!(p.is_empty(), "{p:#?}");
        let h = &hosts[0];
        assert_eq!(h.address, "192.0.2.10", "SSH goes to the address alone");
        assert_eq!(h.destination(), "root@192.0.2.10");
        assert_eq!(
            h.static_ipv4,
            Some(StaticIpv4 {
                address: "192.0.2.10".into(),
                prefix_length: 24,
                gateway: "192.0.2.1".into(),
                dns: vec!["192.0.2.1".into(), "2001:db8::1".into()],
            })
        );
        assert_eq!(h.reach(), Reach::Static);
        assert!(
            h.reach_note()
                .contains("static 192.0.2.10/24 via 192.0.2.1 on eth0"),
            "{}",
            h.reach_note()
        );
    }

    #[test]
    fn static_address_problems_have_their_lines() {
        let p = problems(&host("address = \"192.0.2.10/24\"\n"));
        let got: Vec<(usize, &str)> = p.iter().map(|p| (p.line, p.message.as_str())).collect();
        assert_eq!(
            got,
            [
                (1, "host `a`: static address 192.0.2.10/24 has no `gateway`"),
                (1, "host `a`: static address 192.0.2.10/24 has no `dns`"),
            ]
        );
        let p = one(&host(
            "address = \"192.0.2.10/24\"\ngateway = \"198.51.100.1\"\ndns = [\"192.0.2.1\"]\n",
        ));
        assert_eq!(p.line, 5);
        assert!(
            p.message.contains("not another address on the network"),
            "{p}"
        );
        let p = one(&host(
            "address = \"192.0.2.10/24\"\ngateway = \"192.0.2.1\"\ndns = [\"dns.example\"]\n",
        ));
        assert_eq!(p.line, 6);
        assert!(p.message.contains("is not an IP address"), "{p}");
        let p = one(&host(
            "address = \"192.0.2.0/24\"\ngateway = \"192.0.2.1\"\ndns = [\"192.0.2.1\"]\n",
        ));
        assert!(p.message.contains("network or broadcast"), "{p}");
        for bad in [
            "192.0.2.10/33",
            "192.0.2.10/024",
            "2001:db8::10/64",
            "pi.lan/24",
            "192.0.2.10/",
        ] {
            let p = one(&host(&format!(
                "address = \"{bad}\"\ngateway = \"192.0.2.1\"\ndns = [\"192.0.2.1\"]\n"
            )));
            assert_eq!(p.line, 4, "{bad}");
            assert!(
                p.message
                    .contains("not an IPv4 address with a prefix length"),
                "{bad}: {p}"
            );
        }
        let p = one(&host(
            "address = \"192.0.2.10/24\"\ngateway = \"192.0.2.1\"\ndns = \"192.0.2.1\"\n",
        ));
        assert!(p.message.contains("`dns` must be a list of strings"), "{p}");
    }

    #[test]
    fn gateway_and_dns_need_a_static_address() {
        let p = problems(&host(
            "address = \"192.0.2.10\"\ngateway = \"192.0.2.1\"\ndns = [\"192.0.2.1\"]\n",
        ));
        let lines: Vec<usize> = p.iter().map(|p| p.line).collect();
        assert_eq!(lines, [5, 6], "{p:#?}");
        assert!(
            p[0].message
                .contains("`gateway` only applies to a static address")
        );
        assert!(p[0].fix.contains("\"192.0.2.10/24\""));
    }

    #[test]
    fn local_names_must_be_the_hosts_own() {
        let (hosts, p) = parse_inventory(&host("address = \"a.local\"\n"));
        assert!(p.is_empty(), "{p:#?}");
        assert_eq!(hosts[0].address, "a.local", "given to ssh as it is");
        assert_eq!(hosts[0].reach(), Reach::Mdns);
        assert!(problems(&host("address = \"A.local.\"\n")).is_empty());
        let p = one(&host("address = \"b.local\"\n"));
        assert_eq!(p.line, 4);
        assert!(
            p.message
                .contains("not the name this Pi publishes over mDNS, which is `a.local`"),
            "{p}"
        );
        assert!(p.fix.contains("address = \"a.local\""), "{p}");
    }

    #[test]
    fn reach_says_what_each_address_relies_on() {
        let reach = |a: &str| parse_inventory(&host(&format!("address = \"{a}\"\n"))).0[0].clone();
        let h = reach("192.0.2.41");
        assert_eq!(h.reach(), Reach::Dhcp);
        assert!(
            h.reach_note().contains("only if the router hands it out"),
            "{}",
            h.reach_note()
        );
        let h = reach("pi.example.org");
        assert_eq!(h.reach(), Reach::Dns);
        assert!(
            h.reach_note().contains("DNS must resolve"),
            "{}",
            h.reach_note()
        );
        assert!(reach("a.local").reach_note().contains("mDNS name a.local"));
        assert_eq!(Model::Zero2w.static_interface(), "wlan0");
        assert_eq!(Model::Pi3.static_interface(), "eth0");
    }

    /// modules/networking.nix puts a static address on the interface the
    /// xtask names in `check`.
    #[test]
    fn nix_module_agrees_on_the_static_interface() {
        let module = include_str!("../../modules/networking.nix");
        let wifi_only: Vec<Model> = Model::ALL.into_iter().filter(|m| m.wifi_only()).collect();
        assert_eq!(wifi_only, [Model::Zero2w]);
        assert!(module.contains(&format!(
            "interface = if host.model == \"{}\" then \"{}\" else \"{}\";",
            Model::Zero2w,
            Model::Zero2w.static_interface(),
            Model::Pi4.static_interface()
        )));
        assert!(module.contains("networking.usePredictableInterfaceNames = lib.mkDefault false;"));
    }
}
