//! `cargo xtask check` on `hosts/<name>/config-txt.toml`, what a host adds
//! to its config.txt: the rules of lib/config-txt.nix (which renders the
//! file and makes the same rules NixOS assertions), judged by the facts in
//! lib/config-txt.toml, each problem with file:line. No Nix needed.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, Result};
use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::inventory::{Fleet, Host, Problem, line_of};

/// lib/config-txt.toml: what both readers judge a host file by.
pub const FACTS: &str = "lib/config-txt.toml";

/// Sections a host file may have, in the order the file is written.
const ORDER: [&str; 7] = ["pi3", "pi3+", "pi02", "pi0", "pi4", "pi400", "all"];
const TYPED: [&str; 5] = [
    "enable_uart",
    "arm_boost",
    "gpu_mem",
    "dtparam",
    "dtoverlay",
];
/// Lines the boot chain itself needs: never from a host file.
/// The GPU firmware variants the FIRMWARE partition does not carry (start_x, start_db) count too:
/// the firmware would not start (modules/hardware/pi-firmware.nix).
const BOOT_CHAIN: [&str; 8] = [
    "kernel",
    "armstub",
    "arm_64bit",
    "enable_gic",
    "start_x",
    "start_debug",
    "start_file",
    "fixup_file",
];

#[derive(Deserialize)]
pub struct Facts {
    /// Section → the fleet models that read it.
    sections: BTreeMap<String, Vec<String>>,
    gpu_mem: GpuMem,
    arm_boost: ArmBoost,
    overlays: Overlays,
}

#[derive(Deserialize)]
struct GpuMem {
    min: i64,
    max: BTreeMap<String, i64>,
}

#[derive(Deserialize)]
struct ArmBoost {
    models: Vec<String>,
}

#[derive(Deserialize)]
struct Overlays {
    names: Vec<String>,
}

/// Path of a host's config.txt additions, relative to the repository root.
pub fn file(host: &str) -> String {
    format!("hosts/{host}/config-txt.toml")
}

/// Problems in every host's config-txt.toml.
pub fn problems(fleet: &Fleet) -> Result<Vec<Problem>> {
    let mut problems = Vec::new();
    let mut facts: Option<Facts> = None;
    for host in &fleet.hosts {
        let rel = file(&host.name);
        let text = match std::fs::read_to_string(fleet.root.join(&rel)) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e).with_context(|| format!("cannot read {rel}")),
        };
        if facts.is_none() {
            match read_facts(&fleet.root) {
                Ok(f) => facts = Some(f),
                Err(e) => {
                    problems.push(Problem::new(
                        FACTS,
                        0,
                        format!("{e:#}"),
                        "restore lib/config-txt.toml from the template (`git checkout lib/config-txt.toml`)",
                    ));
                    return Ok(problems);
                }
            }
        }
        if let Some(f) = &facts {
            problems.extend(file_problems(f, host, &rel, &text));
        }
    }
    Ok(problems)
}

pub fn read_facts(root: &Path) -> Result<Facts> {
    let text = std::fs::read_to_string(root.join(FACTS))
        .with_context(|| format!("cannot read {FACTS}"))?;
    toml::from_str(&text).with_context(|| format!("{FACTS} is not valid"))
}

/// The key a config.txt line sets (`key=value`), if any.
fn key_of(line: &str) -> Option<&str> {
    let (k, _) = line.split_once('=')?;
    let k = k.trim();
    (!k.is_empty() && !k.contains(char::is_whitespace)).then_some(k)
}

/// Problems of one host file, in file order, with the text lib/config-txt.nix
/// gives its assertions.
pub fn file_problems(facts: &Facts, host: &Host, rel: &str, text: &str) -> Vec<Problem> {
    let doc = match DeTable::parse(text) {
        Ok(doc) => doc.into_inner(),
        Err(e) => {
            let line = e.span().map(|s| line_of(text, s.start)).unwrap_or(0);
            return vec![Problem::new(
                rel,
                line,
                format!("not valid TOML: {}", e.message().trim()),
                "correct the syntax",
            )];
        }
    };
    let model = host.model.as_str();
    let mut out = Vec::new();
    let mut at = |span: std::ops::Range<usize>, message: String, fix: String| {
        out.push(Problem::new(rel, line_of(text, span.start), message, fix));
    };
    let device_tree = doc
        .iter()
        .find(|(k, _)| k.get_ref().as_ref() == "device_tree");
    let firmware_tree = match device_tree {
        None => false,
        Some((_, v)) => match v.get_ref().as_str() {
            Some("kernel") => false,
            Some("firmware") => {
                if model != "pi4" {
                    at(
                        v.span(),
                        "`device_tree = \"firmware\"` needs a Pi 4: the FIRMWARE partition holds only bcm2711 device trees".into(),
                        "remove it".into(),
                    );
                }
                true
            }
            other => {
                // As Nix's `toString` shows the value.
                let shown = match (other, v.get_ref()) {
                    (Some(s), _) => s.to_string(),
                    (None, DeValue::Integer(i)) => i.as_str().to_string(),
                    (None, DeValue::Boolean(true)) => "1".to_string(),
                    _ => String::new(),
                };
                at(
                    v.span(),
                    format!("`device_tree = \"{shown}\"` is neither \"kernel\" nor \"firmware\""),
                    "write `device_tree = \"kernel\"` or remove it".into(),
                );
                false
            }
        },
    };
    for (key, value) in doc.iter() {
        let s = key.get_ref().as_ref();
        if s == "device_tree" {
            continue;
        }
        let span = key.span();
        let Some(models) = facts.sections.get(s) else {
            at(
                span,
                format!("[{s}] is not a model filter of config.txt"),
                format!("use one of [{}]", ORDER.join("], [")),
            );
            continue;
        };
        if models.is_empty() {
            at(
                span,
                format!("[{s}] applies to no model of this fleet (pi3, pi4, zero2w)"),
                "remove the section or move its settings to [all]".into(),
            );
            continue;
        }
        if !models.iter().any(|m| m == model) {
            at(
                span,
                format!("[{s}] never applies to {}, a {model}", host.name),
                format!("move its settings to [all] or to a section of the {model}"),
            );
            continue;
        }
        let Some(table) = value.get_ref().as_table() else {
            at(
                span,
                format!("[{s}] must be a table"),
                format!("write `[{s}]` followed by its settings"),
            );
            continue;
        };
        for (k, v) in table.iter() {
            setting(facts, host, firmware_tree, s, k, v, &mut at);
        }
    }
    out
}

/// The rules of one setting, first match only (as lib/config-txt.nix).
fn setting(
    facts: &Facts,
    host: &Host,
    firmware_tree: bool,
    s: &str,
    k: &Spanned<std::borrow::Cow<'_, str>>,
    v: &Spanned<DeValue<'_>>,
    at: &mut impl FnMut(std::ops::Range<usize>, String, String),
) {
    let model = host.model.as_str();
    let key = k.get_ref().as_ref();
    let span = k.span();
    let value = v.get_ref();
    let strings = || -> Option<Vec<(String, std::ops::Range<usize>)>> {
        value
            .as_array()?
            .iter()
            .map(|e| e.get_ref().as_str().map(|t| (t.to_string(), e.span())))
            .collect()
    };
    let reach = |at: &mut dyn FnMut(std::ops::Range<usize>, String, String)| {
        if !firmware_tree {
            at(
                span.clone(),
                format!(
                    "[{s}] `{key}` would not reach Linux: U-Boot boots the kernel's own device tree (extlinux FDTDIR), not the firmware's"
                ),
                format!(
                    "set `device_tree = \"firmware\"` (Pi 4 only), or use hardware.deviceTree.overlays in hosts/{}/default.nix",
                    host.name
                ),
            );
        }
    };
    let keys: Vec<&str> = TYPED.iter().copied().chain(["lines"]).collect();
    if !keys.contains(&key) {
        at(
            span,
            format!("[{s}] `{key}` is not a setting this file types"),
            format!(
                "put it in `lines = [\"{key}=...\"]`, or use one of {}",
                keys.join(", ")
            ),
        );
        return;
    }
    match key {
        "enable_uart" | "arm_boost" => match value.as_bool() {
            None => at(
                span,
                format!("[{s}] `{key}` must be true or false"),
                format!("write `{key} = true` or `{key} = false`"),
            ),
            Some(false) if key == "enable_uart" => at(
                span,
                format!(
                    "[{s}] `enable_uart = false` stops U-Boot: it needs enable_uart=1 (nixpkgs' sd-image-aarch64.nix)"
                ),
                "remove `enable_uart = false`".into(),
            ),
            Some(_) if key == "arm_boost" && !facts.arm_boost.models.iter().any(|m| m == model) => {
                at(
                    span,
                    format!(
                        "[{s}] `arm_boost` is a Raspberry Pi 4 setting and {} is a {model}",
                        host.name
                    ),
                    "remove it".into(),
                )
            }
            Some(_) => {}
        },
        "gpu_mem" => {
            let n = value
                .as_integer()
                .and_then(|i| i64::from_str_radix(&i.as_str().replace('_', ""), i.radix()).ok());
            let (min, max) = (
                facts.gpu_mem.min,
                facts.gpu_mem.max.get(model).copied().unwrap_or(0),
            );
            match n {
                None => at(
                    span,
                    format!("[{s}] `gpu_mem` must be a number of megabytes"),
                    "write e.g. `gpu_mem = 16`".into(),
                ),
                Some(n) if n < min || n > max => at(
                    v.span(),
                    format!(
                        "[{s}] `gpu_mem = {n}` is outside {min}..{max}, the range for a {model}"
                    ),
                    format!("set gpu_mem between {min} and {max}"),
                ),
                Some(_) => {}
            }
        }
        _ => {
            let Some(list) = strings() else {
                at(
                    span,
                    format!("[{s}] `{key}` must be a list of strings"),
                    format!("write e.g. `{key} = [\"...\"]`"),
                );
                return;
            };
            match key {
                "dtoverlay" => {
                    for (entry, espan) in &list {
                        let name = entry.split(',').next().unwrap_or("");
                        if !facts.overlays.names.iter().any(|n| n == name) {
                            at(
                                espan.clone(),
                                format!("[{s}] overlay `{name}` is not one the firmware ships"),
                                "check the name against lib/config-txt.toml's list (overlays/<name>.dtbo)".into(),
                            );
                        }
                    }
                    reach(at);
                }
                "dtparam" => reach(at),
                _ => {
                    for (line, lspan) in &list {
                        line_problem(s, line, lspan.clone(), at);
                    }
                }
            }
        }
    }
}

fn line_problem(
    s: &str,
    line: &str,
    span: std::ops::Range<usize>,
    at: &mut impl FnMut(std::ops::Range<usize>, String, String),
) {
    if line.trim_start().starts_with('[') {
        at(
            span,
            format!("[{s}] the line `{line}` starts a section"),
            format!("make it a table of its own: `{line}`"),
        );
    } else if let Some(k) = key_of(line) {
        if TYPED.contains(&k) {
            at(
                span,
                format!("[{s}] the line `{line}` sets `{k}`, which is typed"),
                format!("write `{k} = ...` in [{s}] instead"),
            );
        } else if BOOT_CHAIN.contains(&k) {
            at(
                span,
                format!("[{s}] the line `{line}` changes the boot chain (`{k}`)"),
                "remove it: the model's defaults set it".into(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts() -> Facts {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        read_facts(&root).unwrap()
    }

    fn host(model: &str) -> Host {
        let text =
            format!("[[host]]\nname = \"pi\"\nmodel = \"{model}\"\naddress = \"pi.local\"\n");
        crate::inventory::parse_inventory(&text).0.remove(0)
    }

    fn messages(model: &str, text: &str) -> Vec<String> {
        file_problems(&facts(), &host(model), "f.toml", text)
            .into_iter()
            .map(|p| format!("{}: {}", p.line, p.message))
            .collect()
    }

    #[test]
    fn a_good_file_has_no_problems() {
        let pi4 = "device_tree = \"firmware\"\n[pi4]\narm_boost = false\ngpu_mem = 76\n[pi400]\nlines = [\"a=b\"]\n[all]\ndtoverlay = [\"disable-bt\", \"gpio-fan,gpiopin=14\"]\ndtparam = [\"audio=on\"]\n";
        assert_eq!(messages("pi4", pi4), Vec::<String>::new());
        let zero = "[pi0]\ngpu_mem = 16\n[pi02]\nenable_uart = true\n[all]\nlines = [\"hdmi_force_hotplug=1\"]\n";
        assert_eq!(messages("zero2w", zero), Vec::<String>::new());
        assert_eq!(
            messages("pi3", "[\"pi3+\"]\ngpu_mem = 512\n"),
            Vec::<String>::new()
        );
    }

    #[test]
    fn each_rule_names_its_line() {
        assert_eq!(
            messages("pi3", "[all]\ngpu_mem = 513\n"),
            ["2: [all] `gpu_mem = 513` is outside 16..512, the range for a pi3"]
        );
        assert_eq!(
            messages("pi3", "device_tree = \"firmware\"\n"),
            [
                "1: `device_tree = \"firmware\"` needs a Pi 4: the FIRMWARE partition holds only bcm2711 device trees"
            ]
        );
        assert_eq!(
            messages("pi4", "[all]\ndtparam = [\"audio=on\"]\n"),
            [
                "2: [all] `dtparam` would not reach Linux: U-Boot boots the kernel's own device tree (extlinux FDTDIR), not the firmware's"
            ]
        );
        assert_eq!(
            messages(
                "pi4",
                "[all]\nlines = [\n  \"ok=1\",\n  \" armstub = x.bin\",\n]\n"
            ),
            ["4: [all] the line ` armstub = x.bin` changes the boot chain (`armstub`)"]
        );
        assert_eq!(
            messages("pi4", "[all\n"),
            ["1: not valid TOML: unclosed table, expected `]`"]
        );
    }

    #[test]
    fn the_key_of_a_line() {
        assert_eq!(key_of("gpu_mem=16"), Some("gpu_mem"));
        assert_eq!(key_of(" dtoverlay = disable-bt"), Some("dtoverlay"));
        assert_eq!(key_of("initramfs initrd.img followkernel"), None);
        assert_eq!(key_of("# a=b c"), None);
    }
}
