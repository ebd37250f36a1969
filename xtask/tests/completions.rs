//! `cargo xtask completions bash|zsh|fish`: each script, loaded by the real
//! shell, completes `cargo xtask <TAB>` (subcommands, then their options)
//! and leaves every other `cargo …` to the cargo completion there was
//! (rustup's for bash and zsh, also loaded on demand by bash-completion;
//! fish's own).

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{need_program, prerequisite};

const SUBCOMMANDS: &[&str] = &[
    "setup-binfmt",
    "new-host",
    "add-key",
    "check",
    "sd",
    "deploy",
];

/// The script `cargo xtask completions SHELL` prints, saved in `dir`.
fn script(shell: &str, dir: &Path) -> PathBuf {
    let out = assert_cmd::Command::cargo_bin("xtask")
        .unwrap()
        .args(["completions", shell])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let path = dir.join(format!("completions.{shell}"));
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

/// Where rustup's toolchain keeps cargo's own completions (`etc/bash_completion.d/cargo`,
/// `share/zsh/site-functions/_cargo`).
fn sysroot() -> PathBuf {
    let out = Command::new("rustc")
        .args(["--print", "sysroot"])
        .output()
        .unwrap();
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

fn need_file(path: &Path, why: &str) -> Option<String> {
    (!path.is_file()).then(|| format!("{} is missing ({why})", path.display()))
}

/// Runs `script` in a bash without startup files; `t WORDS…` prints what
/// completing the last word gives, one line per call: `WORDS -> MATCHES`.
fn bash(script: &str, env: &[(&str, &Path)]) -> Vec<String> {
    let t = r#"t() { COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); COMP_LINE="$*"; COMP_POINT=${#COMP_LINE}; COMPREPLY=()
  local f; f=$(complete -p cargo); f=${f##* -F }; f=${f%% *}
  "$f" cargo "${COMP_WORDS[COMP_CWORD]}" "${COMP_WORDS[COMP_CWORD-1]}"; echo "$* -> ${COMPREPLY[*]}"; }
"#;
    let mut cmd = Command::new("bash");
    cmd.args(["--norc", "--noprofile", "-c", &format!("{t}{script}")]);
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout.lines().map(str::to_string).collect()
}

/// The matches of `words` in the lines [`bash`] printed.
fn matches<'a>(lines: &'a [String], words: &str) -> Vec<&'a str> {
    let prefix = format!("{words} -> ");
    let line = lines
        .iter()
        .find(|l| l.starts_with(&prefix))
        .unwrap_or_else(|| panic!("no completion of `{words}` in {lines:#?}"));
    line[prefix.len()..].split_whitespace().collect()
}

fn assert_xtask_words(m: impl Fn(&str) -> Vec<String>) {
    let subcommands = m("cargo xtask ");
    for s in SUBCOMMANDS {
        assert!(
            subcommands.iter().any(|c| c == s),
            "no {s} in {subcommands:?}"
        );
    }
    assert_eq!(m("cargo xtask sd --d"), ["--decompress", "--dry-run"]);
    assert_eq!(m("cargo xtask setup-binfmt --ch"), ["--check"]);
    assert_eq!(
        m("cargo xtask --flake /nonexistent setup-binfmt --ch"),
        ["--check"]
    );
    assert!(m("cargo xtask completions ").contains(&"zsh".to_string()));
}

#[test]
fn bash_without_a_cargo_completion() {
    if !prerequisite(need_program("bash", "bash")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = script("bash", dir.path());
    let lines = bash(
        &format!(
            "source {s:?}
t cargo xtask ''; t cargo xtask sd --d; t cargo xtask setup-binfmt --ch
t cargo xtask --flake /nonexistent setup-binfmt --ch; t cargo xtask completions ''; t cargo x"
        ),
        &[],
    );
    assert_xtask_words(|w| {
        let w = w
            .strip_suffix(' ')
            .map_or(w.to_string(), |w| format!("{w} ''"));
        let key = w.replace(" ''", " ");
        matches(&lines, &key)
            .iter()
            .map(|s| s.to_string())
            .collect()
    });
    assert_eq!(matches(&lines, "cargo x"), ["xtask"]);
}

#[test]
fn bash_keeps_rustups_cargo_completion() {
    let bash_completion = Path::new("/usr/share/bash-completion/bash_completion");
    let cargo = sysroot().join("etc/bash_completion.d/cargo");
    let missing = need_file(bash_completion, "apt-get install bash-completion")
        .or_else(|| need_file(&cargo, "cargo's completion, installed by rustup"));
    if !prerequisite(missing) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = script("bash", dir.path());
    let checks = "t cargo bu; t cargo x; t cargo xtask sd --d; t cargo xtask ''; complete -p cargo";
    // Loaded before this script, as a sourced file would be.
    let eager = bash(
        &format!("source {bash_completion:?}; source {cargo:?}; source {s:?}\n{checks}"),
        &[],
    );
    // Loaded on first use by bash-completion, from the user's completions
    // folder, as `rustup completions bash cargo > …/completions/cargo` does.
    let user = tempfile::tempdir().unwrap();
    std::fs::create_dir(user.path().join("completions")).unwrap();
    std::fs::copy(&cargo, user.path().join("completions/cargo")).unwrap();
    let lazy = bash(
        &format!("source {bash_completion:?}; source {s:?}\n{checks}"),
        &[("BASH_COMPLETION_USER_DIR", user.path())],
    );
    for lines in [eager, lazy] {
        assert_eq!(matches(&lines, "cargo bu"), ["build"], "{lines:#?}");
        assert_eq!(matches(&lines, "cargo x"), ["xtask"], "{lines:#?}");
        assert_eq!(
            matches(&lines, "cargo xtask sd --d"),
            ["--decompress", "--dry-run"]
        );
        assert!(
            matches(&lines, "cargo xtask ").contains(&"setup-binfmt"),
            "{lines:#?}"
        );
        assert!(
            lines
                .last()
                .unwrap()
                .contains("-F _cargo_xtask_dispatch cargo"),
            "{lines:#?}"
        );
    }
}

#[test]
fn fish() {
    if !prerequisite(need_program("fish", "fish")) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = script("fish", dir.path());
    let complete = |words: &str| -> Vec<String> {
        let out = Command::new("fish")
            .args(["-c", &format!("source {s:?}; complete -C {words:?}")])
            // A fresh configuration, with fish's own completions.
            .env("XDG_CONFIG_HOME", dir.path().join("config"))
            .env("XDG_DATA_HOME", dir.path().join("data"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(|l| l.split('\t').next().unwrap().to_string())
            .collect()
    };
    assert_xtask_words(complete);
    assert_eq!(complete("cargo xt"), ["xtask"]);
    // fish's own cargo completion still answers.
    assert_eq!(complete("cargo --verb"), ["--verbose"]);
}

/// Completes `words` in an interactive zsh (in a zsh/zpty pseudo-terminal)
/// that ran compinit and sourced `script`; every match, in order.
const ZSH_CAPTURE: &str = r#"zmodload zsh/zpty
zpty z zsh -f -i
zpty -w z "fpath=($2 \$fpath); autoload -Uz compinit; compinit -u -d $ZDOTDIR/zcompdump"
zpty -w z "source $1"
zpty -w z 'compadd() { local -a __m; builtin compadd -O __m "$@"; (( $#__m )) && print -rl -- "" "<m""atch>"${^__m}; builtin compadd "$@" }'
zpty -w z 'zstyle ":completion:*" list-grouped false; zstyle ":completion:*" insert-tab false'
zpty -w z '_cap_end() { print -rl -- "" "<e""nd>" }; comppostfuncs=(_cap_end)'
zpty -w z 'bindkey "^I" complete-word'
zpty -w z "$3"$'\t'
zpty -r z out '*<end>*'
print -rl -- ${${${(M)${(f)out}:#<match>*}#<match>}%$'\r'}
zpty -d z
"#;

#[test]
fn zsh() {
    if !prerequisite(need_program("zsh", "zsh").or_else(|| need_program("timeout", "coreutils"))) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let s = script("zsh", dir.path());
    let capture = dir.path().join("capture.zsh");
    std::fs::write(&capture, ZSH_CAPTURE).unwrap();
    let rustup = sysroot().join("share/zsh/site-functions");
    let empty = dir.path().join("no-functions");
    std::fs::create_dir(&empty).unwrap();
    let complete = |fpath: &Path, words: &str| -> Vec<String> {
        let out = Command::new("timeout")
            .arg("30")
            .arg("zsh")
            .arg("-f")
            .arg(&capture)
            .arg(&s)
            .arg(fpath)
            .arg(words)
            .env("ZDOTDIR", dir.path())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{words}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::to_string)
            .collect()
    };
    assert_xtask_words(|w| complete(&empty, w));
    assert_eq!(complete(&empty, "cargo xt"), ["xtask"]);
    if prerequisite(need_file(
        &rustup.join("_cargo"),
        "cargo's completion, installed by rustup",
    )) {
        assert_xtask_words(|w| complete(&rustup, w));
        assert_eq!(complete(&rustup, "cargo bu"), ["build"]);
        assert!(complete(&rustup, "cargo xt").contains(&"xtask".to_string()));
    }
}

#[test]
fn help_lists_the_shells_and_how_to_install() {
    let out = assert_cmd::Command::cargo_bin("xtask")
        .unwrap()
        .args(["completions", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(
        help.contains("[possible values: bash, zsh, fish]"),
        "{help}"
    );
    for line in [
        "cargo xtask completions bash > ~/.cargo-xtask.bash",
        "cargo xtask completions zsh > ~/.cargo-xtask.zsh",
        "cargo xtask completions fish > ~/.config/fish/conf.d/cargo-xtask.fish",
    ] {
        assert!(help.contains(line), "{help}");
    }
    // Every shell the help names produces a script.
    for shell in ["bash", "zsh", "fish"] {
        let dir = tempfile::tempdir().unwrap();
        let text = std::fs::read_to_string(script(shell, dir.path())).unwrap();
        assert!(text.contains("cargo xtask"), "{shell}");
    }
    let out = assert_cmd::Command::cargo_bin("xtask")
        .unwrap()
        .args(["completions", "powershell"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}
