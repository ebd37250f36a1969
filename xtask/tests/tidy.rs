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
    assert!(lines[1].starts_with("cargo test --workspace"));
    let ci = std::fs::read_to_string(common::repo_root().join(".ci/run")).unwrap();
    assert!(
        ci.contains("cargo test --workspace"),
        ".ci/run must run the README's test command"
    );
}
