//! binfmt_misc entries: parsing what the kernel shows under
//! `/proc/sys/fs/binfmt_misc/<name>`, and writing registration lines
//! (`:name:type:offset:magic:mask:interpreter:flags`) for `register` and
//! `/etc/binfmt.d`.

use anyhow::{Context, Result, bail};

/// The name Debian's and Ubuntu's QEMU packages give the aarch64 entry.
pub const NAME: &str = "qemu-aarch64";
/// ELF64, little endian, version 1, `e_type` 2 or 3, `e_machine` AArch64.
pub const MAGIC: [u8; 20] = [
    0x7f, 0x45, 0x4c, 0x46, 0x02, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
    0x02, 0x00, 0xb7, 0x00,
];
/// Ignores the OS ABI byte and the low bit of `e_type` (executables and PIEs).
pub const MASK: [u8; 20] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xfe, 0xff, 0xff, 0xff,
];
/// Flags we register with: P (keep argv[0]), O (hand the binary as a file
/// descriptor) and F (open the interpreter now, so it works inside chroots
/// and the Nix build sandbox). The same as Debian's package plus F.
pub const FLAGS: &str = "POF";

/// One binfmt_misc entry as the kernel shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    pub name: String,
    pub enabled: bool,
    pub interpreter: String,
    pub flags: String,
    pub rule: Rule,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Rule {
    Magic {
        offset: usize,
        magic: Vec<u8>,
        mask: Option<Vec<u8>>,
    },
    Extension(String),
}

impl Entry {
    /// Parses the text of `/proc/sys/fs/binfmt_misc/<name>`.
    pub fn parse(name: &str, text: &str) -> Result<Entry> {
        let mut enabled = None;
        let (mut interpreter, mut flags) = (None, String::new());
        let (mut offset, mut magic, mut mask, mut extension) = (0, None, None, None);
        for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
            let (key, value) = line.split_once(' ').unwrap_or((line, ""));
            let value = value.trim();
            match key {
                "enabled" => enabled = Some(true),
                "disabled" => enabled = Some(false),
                "interpreter" => interpreter = Some(value.to_string()),
                "flags:" => flags = value.to_string(),
                "offset" => offset = value.parse().context("bad offset")?,
                "magic" => magic = Some(hex(value)?),
                "mask" => mask = Some(hex(value)?),
                "extension" => extension = Some(value.trim_start_matches('.').to_string()),
                _ => {}
            }
        }
        let rule = match (magic, extension) {
            (Some(magic), _) => Rule::Magic {
                offset,
                magic,
                mask,
            },
            (None, Some(ext)) => Rule::Extension(ext),
            (None, None) => bail!("binfmt_misc entry {name} has neither magic nor extension"),
        };
        Ok(Entry {
            name: name.to_string(),
            enabled: enabled
                .with_context(|| format!("binfmt_misc entry {name}: no status line"))?,
            interpreter: interpreter
                .with_context(|| format!("binfmt_misc entry {name}: no interpreter line"))?,
            flags,
            rule,
        })
    }

    /// Whether the kernel would hand a file starting with `header` to this
    /// entry (when enabled), as `fs/binfmt_misc.c` decides.
    pub fn matches(&self, header: &[u8]) -> bool {
        let Rule::Magic {
            offset,
            magic,
            mask,
        } = &self.rule
        else {
            return false;
        };
        let Some(bytes) = header.get(*offset..offset + magic.len()) else {
            return false;
        };
        bytes.iter().zip(magic).enumerate().all(|(i, (b, m))| {
            let k = mask.as_ref().map_or(0xff, |mask| mask[i]);
            (b ^ m) & k == 0
        })
    }

    pub fn has_flag(&self, flag: char) -> bool {
        self.flags.contains(flag)
    }
}

/// The registration line for the aarch64 interpreter at `interpreter`.
pub fn register_line(interpreter: &str) -> String {
    format!(
        ":{NAME}:M::{}:{}:{interpreter}:{FLAGS}",
        escape(&MAGIC),
        escape(&MASK)
    )
}

/// A parsed registration line (as in `/etc/binfmt.d/*.conf` or
/// `/usr/lib/binfmt.d/*.conf`): the same fields the kernel would show.
pub fn parse_register_line(line: &str) -> Option<Entry> {
    let line = line.trim();
    let sep = line.chars().next()?;
    if line.starts_with('#') || line.starts_with(';') {
        return None;
    }
    let fields: Vec<&str> = line[sep.len_utf8()..].split(sep).collect();
    if fields.len() < 6 {
        return None;
    }
    let (name, kind, offset, magic, mask, interpreter) = (
        fields[0], fields[1], fields[2], fields[3], fields[4], fields[5],
    );
    let flags = fields.get(6).copied().unwrap_or("").to_string();
    let rule = match kind {
        "M" => Rule::Magic {
            offset: if offset.is_empty() {
                0
            } else {
                offset.parse().ok()?
            },
            magic: unescape(magic)?,
            mask: if mask.is_empty() {
                None
            } else {
                Some(unescape(mask)?)
            },
        },
        "E" => Rule::Extension(magic.to_string()),
        _ => return None,
    };
    Some(Entry {
        name: name.to_string(),
        enabled: true,
        interpreter: interpreter.to_string(),
        flags,
        rule,
    })
}

/// A format file of binfmt-support (`/usr/share/binfmts/<name>`: `key
/// value` lines), as the kernel will show it once registered.
pub fn parse_binfmts(name: &str, text: &str) -> Option<Entry> {
    let field = |key: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
            .map(str::trim)
    };
    let yes = |key: &str| field(key) == Some("yes");
    let mut flags = String::new();
    for (key, flag) in [
        ("preserve", 'P'),
        ("credentials", 'O'),
        ("credentials", 'C'),
        ("fix_binary", 'F'),
    ] {
        if yes(key) {
            flags.push(flag);
        }
    }
    let rule = match field("magic") {
        Some(magic) => Rule::Magic {
            offset: field("offset").unwrap_or("0").parse().ok()?,
            magic: unescape(magic)?,
            mask: match field("mask").filter(|m| !m.is_empty()) {
                Some(m) => Some(unescape(m)?),
                None => None,
            },
        },
        None => Rule::Extension(field("extension")?.to_string()),
    };
    Some(Entry {
        name: name.to_string(),
        enabled: true,
        interpreter: field("interpreter")?.to_string(),
        flags,
        rule,
    })
}

/// `\xHH` for every byte, as binfmt_misc registration lines take them.
fn escape(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("\\x{b:02x}")).collect()
}

fn unescape(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && b.get(i + 1) == Some(&b'x') && i + 4 <= b.len() {
            out.push(u8::from_str_radix(std::str::from_utf8(&b[i + 2..i + 4]).ok()?, 16).ok()?);
            i += 4;
        } else if b[i] == b'\\' && b.get(i + 1) == Some(&b'\\') {
            out.push(b'\\');
            i += 2;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    Some(out)
}

fn hex(s: &str) -> Result<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        bail!("odd-length hex string {s:?}");
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).with_context(|| format!("bad hex {s:?}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::binfmt::probe;

    // Texts of `/proc/sys/fs/binfmt_misc/qemu-aarch64`.
    /// Debian 12, qemu-user-static 1:7.2, captured (rule OPF from
    /// /usr/lib/binfmt.d/qemu-aarch64.conf).
    const DEBIAN_12: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";
    /// Ubuntu 22.04, qemu-user-static 1:6.2 registered by binfmt-support
    /// from its /usr/share/binfmts/qemu-aarch64 (see `UBUNTU_22_04_BINFMTS`):
    /// preserve, credentials (which implies O) and fix_binary.
    const UBUNTU_22_04: &str = "enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\nflags: POCF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";
    /// An Ubuntu GitHub runner after multiarch/qemu-user-static, captured
    /// (uraimo/run-on-arch-action#75): only F.
    const UBUNTU_MULTIARCH: &str = "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: F\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";
    /// Ubuntu 24.04 with qemu-user-binfmt: the dynamic qemu, no F
    /// (reconstructed in the kernel's format).
    const UBUNTU_24_04_BINFMT: &str = "enabled\ninterpreter /usr/bin/qemu-aarch64\nflags: P\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n";
    /// A registration with a 19-byte magic, captured
    /// (mkaczanowski/packer-plugin-builder-arm#15).
    const SHORT_MAGIC: &str = "enabled\ninterpreter /usr/bin/qemu-aarch64-static\nflags: F\noffset 0\nmagic 7f454c460201010000000000000000000200b7\nmask ffffffffffffff00fffffffffffffffffeffff\n";
    /// Debian 12, python3.11, captured.
    const PYTHON: &str =
        "enabled\ninterpreter /usr/bin/python3.11\nflags: \noffset 0\nmagic a70d0d0a\n";
    const DISABLED_EXT: &str = "disabled\ninterpreter /usr/bin/foo\nflags: \nextension .foo\n";

    #[test]
    fn parses_every_layout() {
        for (text, interp, flags) in [
            (
                DEBIAN_12,
                "/usr/libexec/qemu-binfmt/aarch64-binfmt-P",
                "POF",
            ),
            (
                UBUNTU_22_04,
                "/usr/libexec/qemu-binfmt/aarch64-binfmt-P",
                "POCF",
            ),
            (UBUNTU_MULTIARCH, "/usr/bin/qemu-aarch64-static", "F"),
            (UBUNTU_24_04_BINFMT, "/usr/bin/qemu-aarch64", "P"),
        ] {
            let e = Entry::parse(NAME, text).unwrap();
            assert!(e.enabled);
            assert_eq!(e.interpreter, interp);
            assert_eq!(e.flags, flags);
            assert_eq!(e.has_flag('F'), flags.contains('F'));
            assert!(e.matches(&probe::elf()), "{text}");
            assert_eq!(
                e.rule,
                Rule::Magic {
                    offset: 0,
                    magic: MAGIC.to_vec(),
                    mask: Some(MASK.to_vec())
                }
            );
        }
    }

    #[test]
    fn a_shorter_magic_still_claims_aarch64() {
        let e = Entry::parse("aarch64", SHORT_MAGIC).unwrap();
        assert!(e.matches(&probe::elf()));
        assert!(e.has_flag('F'));
    }

    /// /usr/share/binfmts/qemu-aarch64 of Ubuntu 22.04's qemu-user-static,
    /// captured (mkaczanowski/packer-plugin-builder-arm#133).
    const UBUNTU_22_04_BINFMTS: &str = r"package qemu-user-static
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
magic \x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00
offset 0
mask \xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff
credentials yes
fix_binary yes
preserve yes
";

    #[test]
    fn parses_binfmt_support_formats() {
        let e = parse_binfmts(NAME, UBUNTU_22_04_BINFMTS).unwrap();
        assert_eq!(e, Entry::parse(NAME, UBUNTU_22_04).unwrap());
        let no_f = UBUNTU_22_04_BINFMTS.replace("fix_binary yes", "fix_binary no");
        assert!(!parse_binfmts(NAME, &no_f).unwrap().has_flag('F'));
    }

    #[test]
    fn other_formats_do_not_match_aarch64() {
        let py = Entry::parse("python3.11", PYTHON).unwrap();
        assert!(!py.matches(&probe::elf()));
        assert!(py.matches(&[0xa7, 0x0d, 0x0d, 0x0a, 0, 0]));
        let ext = Entry::parse("foo", DISABLED_EXT).unwrap();
        assert!(!ext.enabled);
        assert_eq!(ext.rule, Rule::Extension("foo".into()));
        assert!(!ext.matches(&probe::elf()));
    }

    #[test]
    fn x86_64_elf_does_not_match() {
        let mut x86 = probe::elf();
        x86[18] = 0x3e; // e_machine EM_X86_64
        let e = Entry::parse(NAME, DEBIAN_12).unwrap();
        assert!(!e.matches(&x86));
        assert!(!e.matches(&x86[..10]));
    }

    #[test]
    fn register_line_round_trips() {
        let line = register_line("/usr/libexec/qemu-binfmt/aarch64-binfmt-P");
        let e = parse_register_line(&line).unwrap();
        assert_eq!(e.name, NAME);
        assert_eq!(e.flags, FLAGS);
        assert!(e.matches(&probe::elf()));
        // The kernel shows the same rule for it.
        assert_eq!(e.rule, Entry::parse(NAME, DEBIAN_12).unwrap().rule);
    }

    #[test]
    fn parses_debian_package_conf() {
        // /usr/lib/binfmt.d/qemu-aarch64.conf from Debian 12's qemu-user-static.
        let line = r":qemu-aarch64:M::\x7f\x45\x4c\x46\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\xb7\x00:\xff\xff\xff\xff\xff\xff\xff\x00\xff\xff\xff\xff\xff\xff\xff\xff\xfe\xff\xff\xff:/usr/libexec/qemu-binfmt/aarch64-binfmt-P:OPF";
        let e = parse_register_line(line).unwrap();
        assert_eq!(e.flags, "OPF");
        assert!(e.matches(&probe::elf()));
        assert!(parse_register_line("# a comment").is_none());
        assert!(parse_register_line("").is_none());
    }
}
