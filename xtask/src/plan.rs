//! Know before you build: what a `nix build` would do, asked of Nix itself
//! with the same build's `--dry-run` (the derivations it would build here,
//! the paths it would fetch), classified, printed as one plan line, and a
//! refusal of heavy derivations that would be built under QEMU.
//!
//! Used by `sd` and `deploy` (`--plan` prints the plan and stops). The
//! parser works on Nix's text (stderr), which is the same in Nix 2.8 and
//! 2.26 (fixtures in `nix/fixtures/<version>/dry-run*`). Nix 2.26 also
//! prints "will be built" before a real build: only a `--dry-run` is read.

use std::path::Path;

use anyhow::{Result, bail};

/// The derivations that take hours to days when built under QEMU, by the
/// name Nix gives them without the version (`builtins.parseDrvName`'s
/// `name`), with what they are. The one list: documentation/sd-images.md
/// ("When something heavy is not cached") shows it to users.
pub const HEAVY: &[(&str, &str)] = &[
    ("linux", "a Linux kernel"),
    ("linux-rpi", "a Raspberry Pi kernel"),
    ("zfs-kernel", "the ZFS kernel module"),
    ("gcc", "the GCC compiler"),
    ("clang", "the Clang compiler"),
    ("llvm", "the LLVM toolchain"),
    ("rustc", "the Rust compiler"),
    ("ghc", "the Haskell compiler"),
    ("go", "the Go toolchain"),
    ("nodejs", "Node.js"),
    ("glibc", "the C library"),
    ("binutils", "the GNU binutils"),
    ("python3", "the Python interpreter"),
    ("perl", "the Perl interpreter"),
    ("systemd", "systemd"),
    ("qtbase", "Qt"),
    ("webkitgtk", "WebKitGTK"),
    ("chromium", "Chromium"),
    ("firefox", "Firefox"),
];

/// What `nix build --dry-run` said it would do.
#[derive(Debug, Default, PartialEq)]
pub struct DryRun {
    /// The `.drv` paths it would build.
    pub built: Vec<String>,
    /// The store paths it would fetch from a binary cache.
    pub fetched: Vec<String>,
    /// The download size, in MiB, as Nix printed it.
    pub download_mib: f64,
    /// Paths Nix does not know how to build ("don't know how to build").
    pub unknown: Vec<String>,
}

#[derive(Clone, Copy, PartialEq)]
enum Section {
    None,
    Built,
    Fetched,
    Unknown,
}

/// Parses Nix's dry-run text: "this derivation will be built:" / "these N
/// derivations will be built:", "this path will be fetched (X MiB
/// download, Y MiB unpacked):" / "these N paths will be fetched (…)",
/// each followed by indented store paths. Other lines are ignored.
pub fn parse(text: &str) -> DryRun {
    let mut dry = DryRun::default();
    let mut section = Section::None;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("/nix/store/") && line.starts_with(' ') {
            let path = trimmed.to_string();
            match section {
                Section::Built => dry.built.push(path),
                Section::Fetched => dry.fetched.push(path),
                Section::Unknown => dry.unknown.push(path),
                Section::None => {}
            }
            continue;
        }
        section = if trimmed.contains("will be built") {
            Section::Built
        } else if trimmed.contains("will be fetched") {
            dry.download_mib += download_mib(trimmed).unwrap_or(0.0);
            Section::Fetched
        } else if trimmed.contains("don't know how to build") {
            Section::Unknown
        } else {
            Section::None
        };
    }
    dry
}

/// "(0.42 MiB download, …)" → 0.42; KiB and GiB (newer Nix) converted.
fn download_mib(line: &str) -> Option<f64> {
    let open = line.find('(')?;
    let mut words = line[open + 1..].split_whitespace();
    let number: f64 = words.next()?.parse().ok()?;
    let factor = match words.next()? {
        "B" => 1.0 / (1024.0 * 1024.0),
        "KiB" => 1.0 / 1024.0,
        "MiB" => 1.0,
        "GiB" => 1024.0,
        _ => return None,
    };
    Some(number * factor)
}

/// `/nix/store/<hash>-linux-6.18.0.drv` → `linux-6.18.0`.
pub fn name(path: &str) -> &str {
    let base = path.rsplit('/').next().unwrap_or(path);
    let base = base.strip_suffix(".drv").unwrap_or(base);
    base.split_once('-').map_or(base, |(_, n)| n)
}

/// The name without its version, as `builtins.parseDrvName` splits it: at
/// the first `-` followed by something that is not a letter.
pub fn pname(name: &str) -> &str {
    let b = name.as_bytes();
    (0..b.len())
        .find(|&i| b[i] == b'-' && b.get(i + 1).is_some_and(|c| !c.is_ascii_alphabetic()))
        .map_or(name, |i| &name[..i])
}

/// What a heavy derivation is, or `None` for an ordinary one.
pub fn heavy(name: &str) -> Option<&'static str> {
    let p = pname(name);
    HEAVY.iter().find(|(n, _)| *n == p).map(|(_, what)| *what)
}

/// The `system` a derivation is built for, read from its `.drv` file
/// (written to the store by the dry run's evaluation): the `system`
/// environment entry every `derivation` call has.
pub fn drv_system(drv: &str) -> Option<String> {
    system_of(&std::fs::read_to_string(drv).ok()?)
}

fn system_of(aterm: &str) -> Option<String> {
    let at = aterm.find("(\"system\",\"")? + "(\"system\",\"".len();
    let end = aterm[at..].find('"')?;
    Some(aterm[at..at + end].to_string())
}

/// One derivation to build.
#[derive(Debug, PartialEq)]
pub struct Build {
    pub name: String,
    /// Built under QEMU (an aarch64 derivation, here, on a non-aarch64 CPU).
    pub emulated: bool,
    /// The `system` it is built for, when its `.drv` says.
    pub system: Option<String>,
    pub heavy: Option<&'static str>,
}

/// The plan: what would be built where, what fetched.
#[derive(Debug)]
pub struct Plan {
    pub builds: Vec<Build>,
    pub fetched: usize,
    pub download_mib: f64,
    pub unknown: Vec<String>,
    /// The SSH destination of a native aarch64 build host, if one builds.
    pub build_host: Option<String>,
}

impl Plan {
    /// Classifies a dry run. `system_of` gives each `.drv`'s system; a
    /// derivation is emulated when it is for aarch64-linux, no build host
    /// builds it, and this CPU (`arch`) is not aarch64.
    pub fn new(
        dry: DryRun,
        build_host: Option<String>,
        arch: &str,
        system_of: impl Fn(&str) -> Option<String>,
    ) -> Plan {
        let builds = dry
            .built
            .iter()
            .map(|drv| {
                let system = system_of(drv);
                let emulated = build_host.is_none()
                    && arch != "aarch64"
                    && system.as_deref().is_none_or(|s| s == "aarch64-linux");
                let n = name(drv).to_string();
                Build {
                    heavy: heavy(&n),
                    name: n,
                    emulated,
                    system,
                }
            })
            .collect();
        Plan {
            builds,
            fetched: dry.fetched.len(),
            download_mib: dry.download_mib,
            unknown: dry.unknown,
            build_host,
        }
    }

    /// The heavy derivations that would be built under QEMU.
    pub fn heavy_emulated(&self) -> Vec<&Build> {
        self.builds
            .iter()
            .filter(|b| b.emulated && b.heavy.is_some())
            .collect()
    }

    /// "plan: 3 derivations built here (2 under QEMU, emulated aarch64; 0
    /// heavy), 412 paths fetched (523.4 MiB download)".
    pub fn line(&self) -> String {
        let n = self.builds.len();
        let emulated = self.builds.iter().filter(|b| b.emulated).count();
        let heavy = self.builds.iter().filter(|b| b.heavy.is_some()).count();
        let place = match &self.build_host {
            Some(h) => format!("built on {h} (native aarch64"),
            None => format!("built here ({emulated} under QEMU, emulated aarch64"),
        };
        format!(
            "plan: {n} derivation{} {place}; {heavy} heavy), {} path{} fetched ({:.1} MiB download)",
            plural(n),
            self.fetched,
            plural(self.fetched),
            self.download_mib
        )
    }

    /// The plan line and the derivations to build, one a line: each
    /// marked `(under QEMU)`, or `(native x86_64)` for what an x86_64
    /// workstation builds with its own tools (the SD card's assembly).
    pub fn render(&self) -> String {
        let mut s = self.line();
        for u in &self.unknown {
            s.push_str(&format!("\n  Nix does not know how to build {u}"));
        }
        for b in &self.builds {
            let place = if b.emulated {
                "  (under QEMU)"
            } else if self.build_host.is_none() && b.system.as_deref() == Some("x86_64-linux") {
                "  (native x86_64)"
            } else {
                ""
            };
            s.push_str(&format!(
                "\n  build {}{place}{}",
                b.name,
                b.heavy.map(|w| format!("  HEAVY: {w}")).unwrap_or_default()
            ));
        }
        s
    }

    /// Why the build is refused (heavy derivations under QEMU), with the
    /// likely causes and the ways out; `None` when it may go on.
    pub fn refusal(&self, command: &str) -> Option<String> {
        let heavy = self.heavy_emulated();
        if heavy.is_empty() {
            return None;
        }
        let names: Vec<String> = heavy
            .iter()
            .map(|b| format!("  - {} ({})", b.name, b.heavy.unwrap_or("")))
            .collect();
        Some(format!(
            "refusing to build {} heavy derivation{} under QEMU (emulated aarch64), which takes from hours to days:\n{}\nnone of the binary caches this Nix uses has {}. Likely causes: an overlay or override that changes it (or something it is built from), a nixpkgs input that differs from the pin in flake.lock (`nix flake metadata` lists the inputs), or a non-default platform setting (boot.kernelPackages, a kernel patch or page size, nixpkgs.config).\nways out: build on a native aarch64 machine (`{command} --build-host user@machine`), add a binary cache of yours that has it (documentation/sd-images.md), or go on anyway: `{command} --allow-slow-build`",
            heavy.len(),
            plural(heavy.len()),
            names.join("\n"),
            if heavy.len() == 1 { "it" } else { "them" }
        ))
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// Asks Nix for the plan of `installable`: the same `nix build` as the
/// real one (`nix::build`'s arguments) with `--dry-run` and no link,
/// echoed, then classified. Needs no aarch64 builder. `Ok(Err(stderr))`
/// when Nix fails (evaluation, download): the caller says what it means.
pub fn ask(installable: &str, build_host: Option<&str>) -> Result<Result<Plan, String>> {
    let plan = dry_run(installable, build_host)?;
    if let Err(stderr) = &plan {
        eprint!("{stderr}");
    }
    Ok(plan)
}

/// [`ask`] without printing Nix's error.
fn dry_run(installable: &str, build_host: Option<&str>) -> Result<Result<Plan, String>> {
    let sh = xshell::Shell::new()?;
    let mut cmd = xshell::cmd!(sh, "nix build --extra-experimental-features")
        .arg("nix-command flakes")
        .args(["--dry-run", "--no-link"])
        .arg(installable);
    if let Some(host) = build_host {
        cmd = cmd
            .arg("--builders")
            .arg(format!("ssh://{host} aarch64-linux"))
            .args(["--max-jobs", "0"])
            .args(["--option", "builders-use-substitutes", "true"]);
    }
    let out = crate::exec::output_any(cmd)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Ok(Err(stderr.into_owned()));
    }
    Ok(Ok(Plan::new(
        parse(&stderr),
        build_host.map(String::from),
        std::env::consts::ARCH,
        drv_system,
    )))
}

/// `--plan`: prints the plan on stdout; an error (exit non-zero) when the
/// build would be refused.
pub fn print(plan: &Plan, command: &str, allow_slow: bool) -> Result<()> {
    println!("{}", plan.render());
    match plan.refusal(command) {
        Some(why) if !allow_slow => bail!("the build would be refused: {why}"),
        Some(_) => println!("(--allow-slow-build: it would build them under QEMU anyway)"),
        None => println!("nothing heavy is built under QEMU: the build may go on"),
    }
    Ok(())
}

/// The plan of the build of `h`'s system (its toplevel), with the build
/// host given on the command line or the host's own.
fn host_plan(root: &Path, h: &crate::inventory::Host, build_host: Option<&str>) -> Result<Plan> {
    let attr = crate::nix::host_attr(root, &h.name, ".system.build.toplevel");
    let bh = build_host.or(h.build_host.as_deref());
    ask(&attr, bh)?.map_err(|e| {
        anyhow::anyhow!(
            "nix could not plan the build of `{}`: {}",
            h.name,
            crate::nix::error_summary(&e)
        )
    })
}

/// `deploy --plan`: the plan of each host's system; an error naming the
/// hosts whose build would be refused.
pub fn hosts(
    root: &Path,
    hosts: &[crate::inventory::Host],
    build_host: Option<&str>,
    allow_slow: bool,
) -> Result<()> {
    crate::nix::version::require()?;
    let mut refused = Vec::new();
    for h in hosts {
        let p = host_plan(root, h, build_host)?;
        println!("{}:", h.name);
        if print(&p, &format!("cargo xtask deploy {}", h.name), allow_slow).is_err() {
            println!(
                "{}",
                p.refusal(&format!("cargo xtask deploy {}", h.name))
                    .unwrap_or_default()
            );
            refused.push(h.name.clone());
        }
    }
    if !refused.is_empty() {
        bail!(
            "the build of {} would be refused (reasons above)",
            refused.join(", ")
        );
    }
    Ok(())
}

/// Before a real `deploy`, before anything else starts: each host's plan
/// (on stderr), and a refusal naming every host that would build a heavy
/// derivation under QEMU, with sd's reasons and ways out, unless
/// `allow_slow`. Hosts built natively (a build host, an aarch64
/// workstation) emulate nothing and are not asked about; a host whose
/// system Nix cannot evaluate is left to the deploy, which reports it.
pub fn check_hosts(
    root: &Path,
    hosts: &[crate::inventory::Host],
    build_host: Option<&str>,
    allow_slow: bool,
) -> Result<()> {
    let mut refusals = Vec::new();
    for h in hosts {
        if build_host.or(h.build_host.as_deref()).is_some() || std::env::consts::ARCH == "aarch64" {
            continue;
        }
        let attr = crate::nix::host_attr(root, &h.name, ".system.build.toplevel");
        // A system Nix cannot evaluate fails in the deploy itself, which
        // says so for that host like for any other failure.
        let Ok(p) = dry_run(&attr, None)? else {
            continue;
        };
        eprintln!("{}: {}", h.name, p.render());
        match p.refusal(&format!("cargo xtask deploy {}", h.name)) {
            Some(_) if allow_slow => eprintln!(
                "--allow-slow-build: building {}'s heavy derivations under QEMU anyway",
                h.name
            ),
            Some(why) => refusals.push(format!("{}: {why}", h.name)),
            None => {}
        }
    }
    if !refusals.is_empty() {
        bail!("nothing was deployed:\n{}", refusals.join("\n"));
    }
    Ok(())
}

/// Prints the plan and refuses heavy emulated builds unless `allow_slow`.
pub fn check(plan: &Plan, command: &str, allow_slow: bool) -> Result<()> {
    eprintln!("{}", plan.render());
    match plan.refusal(command) {
        Some(why) if !allow_slow => bail!("{why}"),
        Some(_) => {
            eprintln!("--allow-slow-build: building the heavy derivations under QEMU anyway");
            Ok(())
        }
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;
