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
