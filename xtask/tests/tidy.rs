//! Repository hygiene: the README documents every command.

mod common;

/// Subcommands as `cargo xtask --help` lists them.
fn subcommands() -> Vec<String> {
    let out = assert_cmd::Command::cargo_bin("xtask")
        .unwrap()
        .arg("--help")
        .output()
        .unwrap();
    let help = String::from_utf8(out.stdout).unwrap();
    help.lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .map(str::to_string)
        .collect()
}

#[test]
fn every_command_is_in_the_readme() {
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    let commands = subcommands();
    assert!(
        commands.len() >= 5,
        "could not read the command list: {commands:?}"
    );
    for c in commands {
        assert!(
            readme.contains(&format!("cargo xtask {c}")),
            "README.md does not mention `cargo xtask {c}`"
        );
    }
}

#[test]
fn readme_quick_start_is_two_commands() {
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    let quick = readme
        .split("## Quick start")
        .nth(1)
        .expect("README has a Quick start");
    let block = quick
        .split("```bash")
        .nth(1)
        .unwrap()
        .split("```")
        .next()
        .unwrap();
    let lines: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(
        lines.len(),
        2,
        "Quick start must be exactly two commands: {lines:?}"
    );
    let command = test_command(&readme);
    assert!(
        lines[1].starts_with(&format!("{command} ")),
        "the Quick start must show the test command `{command}`: {}",
        lines[1]
    );
}

/// The command of the README's Tests section.
fn test_command(readme: &str) -> String {
    let tests = readme
        .split("\n## Tests\n")
        .nth(1)
        .expect("README has a Tests section");
    let block = tests
        .split("```bash\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the Tests section shows the command in a bash block");
    let lines: Vec<&str> = block.lines().filter(|l| !l.trim().is_empty()).collect();
    assert_eq!(lines.len(), 1, "one test command: {lines:?}");
    lines[0].trim().to_string()
}

#[test]
fn the_test_command_runs_every_binary_and_ci_runs_exactly_it() {
    let readme = std::fs::read_to_string(common::repo_root().join("README.md")).unwrap();
    let command = test_command(&readme);
    assert!(
        command.starts_with("cargo test --workspace") && command.contains(" --no-fail-fast"),
        "the test command must run every test binary (--no-fail-fast): {command}"
    );
    let ci = std::fs::read_to_string(common::repo_root().join(".ci/run")).unwrap();
    let runs: Vec<&str> = ci
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && l.contains("cargo test"))
        .collect();
    assert_eq!(
        runs,
        [format!("CI=true {command}")],
        ".ci/run must run exactly the README's test command, under CI=true"
    );
}

/// The IPv4 addresses a text names, with their 1-based lines: four dotted
/// numbers of 0 to 255 that are not part of a longer dotted run (a version
/// with five numbers) nor of a word (a version written with a `v`).
fn ipv4_addresses(text: &str) -> Vec<(usize, std::net::Ipv4Addr)> {
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let b = line.as_bytes();
        let mut i = 0;
        while i < b.len() {
            if !b[i].is_ascii_digit() {
                i += 1;
                continue;
            }
            let start = i;
            while i < b.len() && (b[i].is_ascii_digit() || b[i] == b'.') {
                i += 1;
            }
            let run = line[start..i].trim_end_matches('.');
            let before = start.checked_sub(1).map(|j| b[j]);
            let after = b.get(start + run.len()).copied();
            let in_word = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_alphanumeric() || c == b'_');
            if in_word(before) || in_word(after) || run.split('.').count() != 4 {
                continue;
            }
            if let Ok(ip) = run.parse() {
                found.push((n + 1, ip));
            }
        }
    }
    found
}

/// Addresses a test may name: this machine (127.0.0.0/8), the
/// documentation ranges of RFC 5737 (parsed, never connected to), and
/// masks (0.0.0.0, 255.255.255.0, ...).
fn allowed(ip: std::net::Ipv4Addr) -> bool {
    let o = ip.octets();
    let bits = u32::from(ip);
    ip.is_loopback()
        || matches!(o, [192, 0, 2, _] | [198, 51, 100, _] | [203, 0, 113, _])
        || bits.leading_ones() + bits.trailing_zeros() == 32
}

fn files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            files(&path, out);
        } else {
            out.push(path);
        }
    }
}

#[test]
fn ipv4_scan_tells_addresses_from_versions_and_masks() {
    // Written with `_` so that this file passes its own scan.
    let text = "a 10_0_0_1\nhost=\"192_168_1_41\";\nv1_2_3_4 and 1_2_3_4_5 and 10_0_0_256\n127.0.0.1 192.0.2.9 198.51.100.7 203.0.113.200 0.0.0.0 255.255.255.0\nend 172_16_0_1.\n"
        .replace('_', ".");
    let found = ipv4_addresses(&text);
    let lines: Vec<(usize, String)> = found.iter().map(|(n, ip)| (*n, ip.to_string())).collect();
    assert_eq!(
        lines,
        [
            (1, "10_0_0_1".replace('_', ".")),
            (2, "192_168_1_41".replace('_', ".")),
            (4, "127.0.0.1".to_string()),
            (4, "192.0.2.9".to_string()),
            (4, "198.51.100.7".to_string()),
            (4, "203.0.113.200".to_string()),
            (4, "0.0.0.0".to_string()),
            (4, "255.255.255.0".to_string()),
            (5, "172_16_0_1".replace('_', ".")),
        ]
    );
    let bad: Vec<String> = found
        .into_iter()
        .filter(|(_, ip)| !allowed(*ip))
        .map(|(_, ip)| ip.to_string())
        .collect();
    assert_eq!(
        bad,
        ["10_0_0_1", "192_168_1_41", "172_16_0_1"].map(|a| a.replace('_', "."))
    );
}

/// No test, fixture or benchmark names an address outside this machine:
/// an address there is somebody's LAN, and a test that connects to it
/// reaches a real machine. Test inventories use 127.0.0.0/8; addresses that
/// are only parsed come from RFC 5737 (192.0.2.0/24, 198.51.100.0/24,
/// 203.0.113.0/24).
#[test]
fn tests_name_no_address_outside_this_machine() {
    let root = common::repo_root();
    let mut paths = Vec::new();
    files(&root.join("xtask/tests"), &mut paths);
    paths.push(root.join("xtask/src/deploy/bench.rs"));
    paths.sort();
    assert!(paths.len() > 5, "found no test files: {paths:?}");
    let mut bad = Vec::new();
    for path in &paths {
        let Ok(text) = std::fs::read_to_string(path) else {
            continue; // not text
        };
        for (line, ip) in ipv4_addresses(&text) {
            if !allowed(ip) {
                let rel = path.strip_prefix(&root).unwrap_or(path);
                bad.push(format!("{}:{line}: {ip}", rel.display()));
            }
        }
    }
    assert!(
        bad.is_empty(),
        "addresses outside this machine in tests (use 127.0.0.0/8 for what tests connect to, RFC 5737's 192.0.2.0/24, 198.51.100.0/24 or 203.0.113.0/24 for what is only parsed):\n{}",
        bad.join("\n")
    );
}
