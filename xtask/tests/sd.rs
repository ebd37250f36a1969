//! `cargo xtask sd`: real Nix builds of the fixture flake's NixOS-shaped
//! images, a Wi-Fi host's card read back without mounting (only the host
//! key on it, the password nowhere), and every preflight refusal.

mod common;

use std::path::Path;
use std::process::Command;

use common::binfmt_ns::{self, BinfmtNs};
use common::sd_fixture::{NIX_CONFIG, git, sd_fleet};
use common::{need_program, prerequisite, xtask};

const PASSWORD: &str = "correct horse battery staple";

fn ready() -> bool {
    prerequisite(
        [
            ("nix", "nix-bin"),
            ("git", "git"),
            ("zstd", "zstd"),
            ("sfdisk", "fdisk"),
            ("mkfs.vfat", "dosfstools"),
            ("mcopy", "mtools"),
            ("debugfs", "e2fsprogs"),
            ("bmaptool", "bmap-tools"),
        ]
        .iter()
        .find_map(|(p, pkg)| need_program(p, pkg))
        .or_else(binfmt_ns::missing),
    )
}

/// The private namespace's nix.conf: aarch64 builds accepted, and what the
/// fixture needs (no binary cache, no sandbox).
fn ns_nix_conf() -> String {
    format!("{NIX_CONFIG}\nextra-platforms = aarch64-linux i686-linux\n")
}

/// `cargo xtask --flake ROOT sd ARGS` in the binfmt harness's private
/// namespace, where this machine can build aarch64 (qemu-aarch64 registered
/// with the F flag, Nix told about aarch64-linux) without touching its own
/// binfmt registrations or /etc. Stdin is not a terminal.
fn sd(root: &Path, args: &[&str]) -> std::process::Output {
    sd_in(
        BinfmtNs::new()
            .register_qemu("POF")
            .nix_conf(&ns_nix_conf()),
        root,
        args,
    )
}

fn sd_in(ns: BinfmtNs, root: &Path, args: &[&str]) -> std::process::Output {
    let bin = assert_cmd::cargo::cargo_bin("xtask");
    let mut all = vec!["--flake", root.to_str().unwrap(), "sd"];
    all.extend_from_slice(args);
    ns.run(bin, &all)
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    text(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// Runs a program and returns its stdout, failing the test on error.
fn run(program: &str, args: &[&str]) -> String {
    let out = common::command(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

#[test]
fn builds_to_the_stable_path_with_sum_and_record() {
    if !ready() {
        return;
    }
    let fleet = sd_fleet();
    let root = fleet.path();
    let out = sd(root, &["rpi-box-01"]);
    let stdout = text(&out.stdout);
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    // Nix ran, echoed, with its own output on the terminal.
    assert!(
        stderr.contains("$ nix build --extra-experimental-features \"nix-command flakes\""),
        "{stderr}"
    );

    let img = root.join("out/rpi-box-01/rpi-box-01.img.zst");
    let sum = sha256(&img);
    assert!(stdout.contains(&format!("sha256  {sum}")), "{stdout}");
    assert!(
        stdout.contains("out/rpi-box-01/rpi-box-01.img.zst"),
        "{stdout}"
    );
    assert!(
        stdout.contains("next: cargo xtask flash rpi-box-01 /dev/sdX"),
        "{stdout}"
    );
    assert_eq!(mode(&img), 0o600);
    // Nothing half-written or left over next to it.
    let names: Vec<String> = std::fs::read_dir(root.join("out/rpi-box-01"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [
            "rpi-box-01.bmap",
            "rpi-box-01.img.json",
            "rpi-box-01.img.zst"
        ],
        "{names:?}"
    );

    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("out/rpi-box-01/rpi-box-01.img.json")).unwrap(),
    )
    .unwrap();
    let head = git(root, &["rev-parse", "HEAD"]);
    assert_eq!(record["commit"], head.as_str());
    assert_eq!(record["dirty"], false);
    assert_eq!(record["sha256"], sum.as_str());
    assert_eq!(record["size"], std::fs::metadata(&img).unwrap().len());
    assert_eq!(record["wifi"], serde_json::Value::Null);
    // The raw sum is that of the decompressed image.
    let raw = run(
        "sh",
        &["-c", &format!("zstd -dc {} | sha256sum", img.display())],
    );
    assert_eq!(record["raw_sha256"], raw.split_whitespace().next().unwrap());
    // The block map's sha256, so `flash` refuses another map before writing.
    let bmap = run(
        "sha256sum",
        &[root
            .join("out/rpi-box-01/rpi-box-01.bmap")
            .to_str()
            .unwrap()],
    );
    assert_eq!(
        record["bmap_sha256"],
        bmap.split_whitespace().next().unwrap()
    );

    // `list` shows which commit the image is from.
    let list = xtask(root).arg("list").output().unwrap();
    let list = text(&list.stdout);
    let line = list.lines().find(|l| l.starts_with("rpi-box-01")).unwrap();
    assert!(
        line.ends_with(&format!(
            "{} {}",
            &head[..7],
            &record["built"].as_str().unwrap()[..10]
        )),
        "{list}"
    );
    assert!(
        list.lines()
            .find(|l| l.starts_with("rpi-box-03"))
            .unwrap()
            .ends_with(" -"),
        "{list}"
    );

    // Again, with an uncommitted change: same path, the new image replaces the old one.
    std::fs::write(
        root.join("hosts/rpi-box-01/default.nix"),
        "{ ... }:\n{\n  # changed\n}\n",
    )
    .unwrap();
    let again = sd(root, &["rpi-box-01"]);
    assert!(again.status.success(), "{}", text(&again.stderr));
    assert!(
        text(&again.stderr).contains("note: uncommitted changes are built in"),
        "{}",
        text(&again.stderr)
    );
    assert!(text(&again.stderr).contains("hosts/rpi-box-01/default.nix"));
    assert_eq!(
        sha256(&img),
        sum,
        "the fixture image does not depend on default.nix"
    );
    let record: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("out/rpi-box-01/rpi-box-01.img.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(record["dirty"], true);
    let list = text(&xtask(root).arg("list").output().unwrap().stdout);
    assert!(list.contains(&format!("{}+dirty", &head[..7])), "{list}");
}

#[test]
fn decompress_writes_the_raw_nixos_shaped_image() {
    if !ready() {
        return;
    }
    let fleet = sd_fleet();
    let root = fleet.path();
    let cards = tempfile::tempdir().unwrap();
    let dir = cards.path();
    let out = sd(
        root,
        &["rpi-box-03", "--decompress", "--out", dir.to_str().unwrap()],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(!root.join("out").exists(), "--out DIR puts nothing in out/");
    let raw = dir.join("rpi-box-03.img");
    let zst = dir.join("rpi-box-03.img.zst");
    assert_eq!(mode(&raw), 0o600);
    assert_eq!(mode(&zst), 0o600);
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("rpi-box-03.img.json")).unwrap())
            .unwrap();
    assert_eq!(record["raw_sha256"], sha256(&raw).as_str());
    assert_eq!(record["raw_size"], std::fs::metadata(&raw).unwrap().len());
    assert_eq!(record["sha256"], sha256(&zst).as_str());

    // The layout of a NixOS SD image, read back without mounting:
    // MBR, FAT32 `FIRMWARE` at 8 MiB, ext4 `NIXOS_SD` after it.
    let table = run("sfdisk", &["--dump", raw.to_str().unwrap()]);
    assert!(table.contains("label: dos"), "{table}");
    assert!(table.contains("start=       16384"), "{table}");
    let fat = format!("{}@@8M", raw.display());
    let label = Command::new("minfo")
        .args(["-i", &fat, "::"])
        .env("MTOOLS_SKIP_CHECK", "1")
        .output()
        .unwrap();
    assert!(
        text(&label.stdout).contains("FIRMWARE"),
        "{}",
        text(&label.stdout)
    );
    let start: u64 = table
        .lines()
        .filter(|l| l.contains("type=83"))
        .find_map(|l| {
            l.split("start=")
                .nth(1)?
                .split(',')
                .next()?
                .trim()
                .parse()
                .ok()
        })
        .unwrap();
    let ext4 = format!("{}?offset={}", raw.display(), start * 512);
    let stats = run("debugfs", &["-R", "stats", &ext4]);
    assert!(
        stats.contains("Filesystem volume name:   NIXOS_SD"),
        "{stats}"
    );
}

/// Every path of the build's closure (derivations, sources, outputs), with
/// compressed files decompressed: does any contain `needle`?
fn store_contains(store_path: &str, needle: &str) -> Vec<String> {
    let drv = run("nix-store", &["-qd", store_path]);
    let closure = run("nix-store", &["-qR", "--include-outputs", drv.trim()]);
    let mut hits = Vec::new();
    let mut stack: Vec<std::path::PathBuf> = closure.lines().map(Into::into).collect();
    assert!(stack.len() >= 2, "{closure}");
    while let Some(p) = stack.pop() {
        let meta = std::fs::symlink_metadata(&p).unwrap();
        if meta.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if meta.is_file() {
            let bytes = if p.extension().is_some_and(|e| e == "zst") {
                Command::new("zstd")
                    .arg("-dc")
                    .arg(&p)
                    .output()
                    .unwrap()
                    .stdout
            } else {
                std::fs::read(&p).unwrap()
            };
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                hits.push(p.display().to_string());
            }
        }
    }
    hits
}

/// A Wi-Fi host's card: its password is the age secret `wifi-<host>`
/// (`cargo xtask wifi`), so the image carries only the host key, read back
/// with debugfs; the password is nowhere in the image, `out/`, the build's
/// closure (which holds the ciphertext, as agenix's systems do), the logs or
/// Git; and the real `age` CLI decrypts the secret with the key on the card,
/// which is all the Pi has on its first boot.
#[test]
fn a_wifi_card_carries_only_the_host_key() {
    if !ready() || !prerequisite(need_program("age", "age")) {
        return;
    }
    let fleet = sd_fleet();
    let root = fleet.path();
    let ns = BinfmtNs::new()
        .register_qemu("POF")
        .nix_conf(&ns_nix_conf());
    // The namespace's HOME is where the xtask keeps host keys there.
    let data = ns.home().join(".local/share");
    let mut logs = String::new();
    for (args, stdin) in [
        (vec!["identity", "rpi-zero-01"], String::new()),
        (vec!["wifi", "rpi-zero-01"], format!("{PASSWORD}\n")),
    ] {
        let out = assert_cmd::Command::cargo_bin("xtask")
            .unwrap()
            .arg("--flake")
            .arg(root)
            .args(&args)
            .env("XDG_DATA_HOME", &data)
            .write_stdin(stdin)
            .output()
            .unwrap();
        logs += &text(&out.stdout);
        logs += &text(&out.stderr);
        assert!(out.status.success(), "{args:?}: {logs}");
    }
    assert!(logs.contains("cargo xtask deploy rpi-zero-01"), "{logs}");
    git(root, &["add", "-A"]);
    git(
        root,
        &[
            "commit",
            "-q",
            "-m",
            "rpi-zero-01: identity and Wi-Fi password",
        ],
    );

    let bin = assert_cmd::cargo::cargo_bin("xtask");
    let out = ns.run(
        bin,
        &[
            "--flake",
            root.to_str().unwrap(),
            "sd",
            "rpi-zero-01",
            "--decompress",
        ],
    );
    let stdout = text(&out.stdout);
    logs += &stdout;
    logs += &text(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{}", text(&out.stderr));
    assert!(
        stdout.contains(
            "joins `home-wifi`: the Pi decrypts its password (secrets/wifi-rpi-zero-01.age) with the host key on this card"
        ),
        "{stdout}"
    );

    let dir = root.join("out/rpi-zero-01");
    let raw = dir.join("rpi-zero-01.img");
    assert_eq!(mode(&raw), 0o600);
    assert_eq!(mode(&dir.join("rpi-zero-01.img.zst")), 0o600);
    // Read back with e2fsprogs, no mount: the host key, and no Wi-Fi file.
    let ext4 = format!("{}?offset={}", raw.display(), 38 << 20);
    let stat = run(
        "debugfs",
        &["-R", "stat etc/ssh/ssh_host_ed25519_key", &ext4],
    );
    assert!(stat.contains("Type: regular    Mode:  0600"), "{stat}");
    assert!(stat.contains("User:     0   Group:     0"), "{stat}");
    // Where cards made the old way had the password.
    let old = Command::new("debugfs")
        .args(["-R", "stat var/lib/wifi/secrets.conf", &ext4])
        .output()
        .unwrap();
    assert!(
        text(&old.stderr).contains("File not found"),
        "{}",
        text(&old.stdout)
    );
    // The ciphertext is in the image's store, like a NixOS system's.
    let store = run("debugfs", &["-R", "ls -p nix/store", &ext4]);
    assert!(store.contains("-wifi-rpi-zero-01.age/"), "{store}");

    // The real age CLI decrypts it with the key read back from the card.
    let key = dir.join("card-host-key");
    std::fs::write(
        &key,
        run(
            "debugfs",
            &["-R", "cat etc/ssh/ssh_host_ed25519_key", &ext4],
        ),
    )
    .unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let age = run(
        "age",
        &[
            "-d",
            "-i",
            key.to_str().unwrap(),
            root.join("secrets/wifi-rpi-zero-01.age").to_str().unwrap(),
        ],
    );
    assert_eq!(age, format!("psk={PASSWORD}\n"));
    std::fs::remove_file(&key).unwrap();

    // The password is nowhere: not in out/ (the raw image, the compressed
    // one unpacked, the record, the block map), the logs, Git or the store.
    for f in std::fs::read_dir(&dir).unwrap() {
        let f = f.unwrap().path();
        let bytes = if f.extension().is_some_and(|e| e == "zst") {
            Command::new("zstd")
                .arg("-dc")
                .arg(&f)
                .output()
                .unwrap()
                .stdout
        } else {
            std::fs::read(&f).unwrap()
        };
        assert!(
            !bytes
                .windows(PASSWORD.len())
                .any(|w| w == PASSWORD.as_bytes()),
            "the password is in {}",
            f.display()
        );
    }
    assert!(!logs.contains(PASSWORD), "the password is in a log: {logs}");
    let grep = Command::new("git")
        .args(["-C", root.to_str().unwrap(), "grep", "-q", PASSWORD])
        .status()
        .unwrap();
    assert!(!grep.success(), "the password is in Git");
    let record: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("rpi-zero-01.img.json")).unwrap())
            .unwrap();
    let store_path = record["store_path"].as_str().unwrap();
    let hits = store_contains(store_path, PASSWORD);
    assert!(
        hits.is_empty(),
        "the password is in the Nix store: {hits:?}"
    );
    // The scan sees the ciphertext, so it would have seen the value.
    assert!(
        !store_contains(store_path, "age-encryption.org/v1").is_empty(),
        "the secret's file is not in the build's closure"
    );
}

/// Refusals: the command fails with `message`, before any build, writing nothing.
fn refused(root: &Path, args: &[&str], message: &str) {
    let out = sd(root, args);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "accepted: {stderr}");
    assert!(
        stderr.contains(message),
        "expected `{message}` in:\n{stderr}"
    );
    assert!(
        !stderr.contains("$ nix build"),
        "built despite refusing:\n{stderr}"
    );
    assert!(!root.join("out").exists());
}

#[test]
fn refuses_when_this_machine_cannot_build_aarch64() {
    if !ready() {
        return;
    }
    let fleet = sd_fleet();
    let root = fleet.path();
    // Nothing registered with binfmt_misc, Nix not told about aarch64: the
    // setup-binfmt checks fail and sd says how to fix them.
    let out = sd_in(BinfmtNs::new(), root, &["rpi-box-01"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("  - this machine cannot build aarch64-linux yet:"),
        "{stderr}"
    );
    assert!(
        stderr.contains("run `cargo xtask setup-binfmt` to fix all of these"),
        "{stderr}"
    );
    assert!(
        stderr.contains("(or build on an aarch64 machine: --build-host user@machine)"),
        "{stderr}"
    );
    assert!(!stderr.contains("$ nix build"));
    // A build host needs no emulation here.
    let out = sd_in(
        BinfmtNs::new(),
        root,
        &["rpi-box-01", "--dry-run", "--build-host", "nix@arm-builder"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    // Nor does a host whose inventory entry names one.
    let inventory = root.join("hosts/fleet.toml");
    let fleet_text = std::fs::read_to_string(&inventory).unwrap().replace(
        "address = \"rpi-box-03.local\"\n",
        "address = \"rpi-box-03.local\"\nbuild_host = \"nix@pi5.lan\"\n",
    );
    std::fs::write(&inventory, fleet_text).unwrap();
    git(root, &["commit", "-qam", "rpi-box-03 builds on pi5"]);
    let out = sd_in(BinfmtNs::new(), root, &["rpi-box-03", "--dry-run"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains("--builders \"ssh://nix@pi5.lan aarch64-linux\" --max-jobs 0"),
        "{stdout}"
    );
}

#[test]
fn refuses_an_unknown_host() {
    if !ready() {
        return;
    }
    let fleet = sd_fleet();
    refused(
        fleet.path(),
        &["rpi-box-99"],
        "error: no host named `rpi-box-99` in hosts/fleet.toml (hosts: rpi-box-01, rpi-box-03, rpi-zero-01); add one with `cargo xtask new-host`",
    );
}

#[test]
fn refuses_an_unreachable_image() {
    if !ready() {
        return;
    }
    let fleet = sd_fleet();
    let root = fleet.path();
    // Only a placeholder: no real admin key.
    std::fs::write(
        root.join("keys/authorized_keys"),
        "# admin keys\nssh-ed25519 AAAA...your-public-key you@example\n",
    )
    .unwrap();
    git(root, &["commit", "-qam", "placeholder key"]);
    refused(
        root,
        &["rpi-box-01"],
        "host `rpi-box-01`: the image would be unreachable: no admin SSH key in keys/authorized_keys: run `cargo xtask add-key`",
    );
}

/// A Wi-Fi host without its Wi-Fi secret: refused before any build, with
/// the command that makes it; the old `--wifi-secrets` says what replaced it.
#[test]
fn refuses_a_wifi_host_without_its_wifi_secret() {
    if !ready() {
        return;
    }
    let fleet = sd_fleet();
    let root = fleet.path();
    refused(
        root,
        &["rpi-zero-01"],
        &format!(
            "hosts/fleet.toml:{}: host `rpi-zero-01` joins the Wi-Fi `home-wifi` but has no Wi-Fi secret (secrets/wifi-rpi-zero-01.age), so it would come up without Wi-Fi: `cargo xtask wifi rpi-zero-01` (asks for the password)",
            common::wifi_line(root)
        ),
    );
    refused(
        root,
        &["rpi-box-01", "--wifi-secrets", "/nonexistent/pw"],
        "--wifi-secrets is gone: the Wi-Fi password is now an age secret of the host, which the card does not carry; run `cargo xtask wifi rpi-box-01`",
    );
}

#[test]
fn refuses_untracked_host_files() {
    if !ready() {
        return;
    }
    let fleet = sd_fleet();
    let root = fleet.path();
    std::fs::write(
        root.join("hosts/rpi-box-03/containers.toml"),
        "[[container]]\nname = \"web\"\nimage = \"nginx@sha256:200689790a0a0ea48ca45992e0450bc26ccab5307375b41c84dfc4f2475937ab\"\n",
    )
    .unwrap();
    refused(
        root,
        &["rpi-box-03"],
        "not tracked by Git: hosts/rpi-box-03/containers.toml. Nix flakes only see tracked files, so the image would be built without them: run `git add hosts/rpi-box-03/containers.toml`",
    );
}

#[test]
fn refuses_unpinned_container_images() {
    if !ready() {
        return;
    }
    let fleet = sd_fleet();
    let root = fleet.path();
    std::fs::write(
        root.join("hosts/rpi-box-03/containers.toml"),
        "[[container]]\nname = \"web\"\nimage = \"nginx:latest\"\n",
    )
    .unwrap();
    git(root, &["add", "-A"]);
    refused(
        root,
        &["rpi-box-03"],
        "hosts/rpi-box-03/containers.toml:3: container `web`: image `nginx:latest` is not pinned by digest",
    );
}

#[test]
fn refuses_without_nix() {
    if !ready() {
        return;
    }
    let fleet = sd_fleet();
    let empty = tempfile::tempdir().unwrap();
    let out = xtask(fleet.path())
        .env("PATH", empty.path())
        .args(["sd", "rpi-box-01"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr)
            .contains("nix is not installed: install it (see documentation/getting nix ready.md)"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn dry_run_prints_the_exact_build_command() {
    if !ready() {
        return;
    }
    let fleet = sd_fleet();
    let root = fleet.path();
    let r = root.display();
    let out = sd(root, &["rpi-box-01", "--dry-run", "--decompress"]);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        stdout.contains(&format!(
            "$ nix build --extra-experimental-features \"nix-command flakes\" --out-link {r}/out/rpi-box-01/.result {r}#nixosConfigurations.rpi-box-01.config.system.build.sdImageNative\n"
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("out/rpi-box-01/rpi-box-01.img.zst"),
        "{stdout}"
    );
    assert!(
        stdout.contains("out/rpi-box-01/rpi-box-01.img\n"),
        "{stdout}"
    );
    assert!(!root.join("out").exists(), "a dry run writes nothing");

    // With a build host: Nix's remote build, nothing built here.
    let out = sd(
        root,
        &["rpi-box-01", "--dry-run", "--build-host", "nix@arm-builder"],
    );
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(&format!(
            "{r}#nixosConfigurations.rpi-box-01.config.system.build.sdImage --builders \"ssh://nix@arm-builder aarch64-linux\" --max-jobs 0 --option builders-use-substitutes true\n"
        )),
        "{stdout}"
    );
}

/// `flake.nix` of the fixture fleet with `from` replaced by `to`, committed.
fn edit_flake(root: &Path, from: &str, to: &str) {
    let flake = root.join("flake.nix");
    let text = std::fs::read_to_string(&flake).unwrap();
    assert!(text.contains(from), "{from}");
    std::fs::write(&flake, text.replacen(from, to, 1)).unwrap();
    git(root, &["commit", "-qam", "edit"]);
}

const KEYS_LINE: &str = "keys = builtins.concatStringsSep \"\\n\" inventory.admin_keys;";

/// Makes every host's image fetch a file from a closed local port, as an
/// offline machine fails to fetch nixpkgs or the binary cache.
fn unreachable_download(root: &Path) {
    edit_flake(
        root,
        KEYS_LINE,
        &format!(
            "{KEYS_LINE}\n          firmware = builtins.fetchurl {{ url = \"http://127.0.0.1:9/firmware.bin\"; sha256 = \"{}\"; }};",
            "0".repeat(52)
        ),
    );
}

#[test]
fn an_offline_build_is_said_to_be_the_network() {
    if !ready() {
        return;
    }
    let fleet = sd_fleet();
    let root = fleet.path();
    unreachable_download(root);
    let out = sd(root, &["rpi-box-01"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("the Nix build could not download what it needs: unable to download 'http://127.0.0.1:9/firmware.bin'"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "this machine is offline or cannot reach the binary cache (cache.nixos.org) or GitHub"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("nothing is wrong with the fleet definition"),
        "{stderr}"
    );
    assert!(!stderr.contains("cargo xtask check"), "{stderr}");
    // The plan (the build's dry run) meets the error first: it is shown
    // once, and the build itself never starts.
    let shown = |needle: &str| {
        stderr
            .lines()
            .filter(|l| l.starts_with("$ ") && l.contains(needle) && !l.contains("# failed"))
            .count()
    };
    assert_eq!(shown("build --extra-experimental-features"), 1, "{stderr}");
    assert_eq!(shown("--dry-run"), 1, "{stderr}");
    // Nothing left behind: no empty out/rpi-box-01/.
    assert!(
        !root.join("out").exists(),
        "{:?}",
        std::fs::read_dir(root.join("out")).map(|d| d.count())
    );
}

#[test]
fn a_failed_build_names_its_error_line() {
    if !ready() {
        return;
    }
    let fleet = sd_fleet();
    let root = fleet.path();
    edit_flake(
        root,
        "args = [ ./sd-image.sh ];",
        "args = [ \"-c\" \"echo the root partition does not fit >&2; exit 1\" ];",
    );
    // An earlier image stays where it is.
    std::fs::create_dir_all(root.join("out/rpi-box-01")).unwrap();
    std::fs::write(root.join("out/rpi-box-01/rpi-box-01.img.zst"), "earlier").unwrap();
    let out = sd(root, &["rpi-box-01"]);
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("error: the Nix build failed: "))
        .unwrap_or_else(|| panic!("{stderr}"));
    assert!(
        summary.contains("builder for '/nix/store/")
            && summary.ends_with("last log line: the root partition does not fit"),
        "{summary}"
    );
    assert!(!stderr.contains("could not download"), "{stderr}");
    assert_eq!(
        std::fs::read(root.join("out/rpi-box-01/rpi-box-01.img.zst")).unwrap(),
        b"earlier"
    );
    assert!(!root.join("out/rpi-box-01/.result").exists());
}

/// `sd --plan` with real Nix against a local binary cache, the only
/// substituter (`nix copy --to file://…`, unsigned, `require-sigs = false`):
/// the fixture's image, cached, plans nothing built and nothing heavy; a
/// variant whose image needs an uncached aarch64 `linux-…` derivation is
/// refused, naming it, before anything is built. No aarch64 builder here:
/// `--plan` needs none (and the kernel is never built, only planned).
#[test]
fn plan_against_a_local_binary_cache() {
    if !ready() {
        return;
    }
    let fleet = sd_fleet();
    let root = fleet.path();
    let cache = tempfile::tempdir().unwrap();
    let attr = format!(
        "{}#nixosConfigurations.rpi-box-01.config.system.build.sdImageNative",
        root.display()
    );
    let nix = |args: &[&str]| {
        run(
            "nix",
            &[
                &["--extra-experimental-features", "nix-command flakes"],
                args,
            ]
            .concat(),
        )
    };
    let image = nix(&["build", "--no-link", "--print-out-paths", &attr]);
    let image = image.trim();
    let url = format!("file://{}", cache.path().display());
    nix(&["copy", "--to", &url, image]);
    nix(&["store", "delete", image]);
    let plan = |extra: &[&str]| {
        let mut args = vec!["sd", "rpi-box-01", "--plan"];
        args.extend_from_slice(extra);
        xtask(root)
            .args(&args)
            .env(
                "NIX_CONFIG",
                format!("substituters = {url}\nrequire-sigs = false"),
            )
            .output()
            .unwrap()
    };

    let out = plan(&[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("plan: 0 derivations built here (0 under QEMU, emulated aarch64; 0 heavy), 1 path fetched"),
        "{stdout}"
    );
    assert!(stderr.contains("--dry-run"), "{stderr}");
    assert!(!root.join("out").exists());

    // The image now needs a kernel that no cache has.
    edit_flake(
        root,
        KEYS_LINE,
        &format!(
            "{KEYS_LINE}\n          kernel = derivation {{ name = \"linux-6.18.0\"; system = \"aarch64-linux\"; builder = \"/bin/sh\"; args = [ \"-c\" \"exit 1\" ]; }};"
        ),
    );
    let out = plan(&[]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("plan: 2 derivations built here (1 under QEMU, emulated aarch64; 1 heavy)"),
        "{stdout}"
    );
    assert!(
        stdout.contains("build linux-6.18.0  (under QEMU)  HEAVY: a Linux kernel"),
        "{stdout}"
    );
    // The image's own derivation (x86_64-linux, like sdImageNative's card
    // assembly): built natively.
    assert!(
        stdout.contains("build rpi-box-01-sd-image  (native x86_64)\n"),
        "{stdout}"
    );
    for needle in [
        "refusing to build 1 heavy derivation under QEMU",
        "  - linux-6.18.0 (a Linux kernel)",
        "none of the binary caches this Nix uses has it",
        "`cargo xtask sd rpi-box-01 --build-host user@machine`",
        "`cargo xtask sd rpi-box-01 --allow-slow-build`",
    ] {
        assert!(stderr.contains(needle), "{needle}\n{stderr}");
    }
    // Allowed: the plan says so and succeeds.
    let out = plan(&["--allow-slow-build"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("--allow-slow-build: it would build them"));

    // deploy --plan: the same plan for the host's system (the fixture's
    // toplevel is its image), refused the same way.
    let out = xtask(root)
        .args(["deploy", "rpi-box-01", "--plan"])
        .env(
            "NIX_CONFIG",
            format!("substituters = {url}\nrequire-sigs = false"),
        )
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("rpi-box-01:\nplan: 2 derivations built here (1 under QEMU"),
        "{stdout}"
    );
    assert!(
        stdout.contains("`cargo xtask deploy rpi-box-01 --build-host user@machine`"),
        "{stdout}"
    );
    assert!(
        stderr.contains("the build of rpi-box-01 would be refused"),
        "{stderr}"
    );

    // A real deploy is refused the same way before anything starts: the Pi
    // (a listener on its address) is never contacted, no log is written.
    let pi = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    pi.set_nonblocking(true).unwrap();
    let port = pi.local_addr().unwrap().port();
    let inventory = root.join("hosts/fleet.toml");
    let toml = std::fs::read_to_string(&inventory).unwrap().replacen(
        "address = \"rpi-box-01.local\"",
        &format!("address = \"127.0.0.1\"\nport = {port}"),
        1,
    );
    std::fs::write(&inventory, toml).unwrap();
    git(root, &["commit", "-q", "-am", "rpi-box-01 on this machine"]);
    let out = xtask(root)
        .args(["deploy", "rpi-box-01"])
        .env(
            "NIX_CONFIG",
            format!("substituters = {url}\nrequire-sigs = false"),
        )
        .output()
        .unwrap();
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(!out.status.success(), "{stdout}\n{stderr}");
    for needle in [
        "rpi-box-01: plan: 2 derivations built here (1 under QEMU",
        "nothing was deployed:\nrpi-box-01: refusing to build 1 heavy derivation under QEMU",
        "  - linux-6.18.0 (a Linux kernel)",
        "none of the binary caches this Nix uses has it",
        "`cargo xtask deploy rpi-box-01 --build-host user@machine`",
        "`cargo xtask deploy rpi-box-01 --allow-slow-build`",
    ] {
        assert!(stderr.contains(needle), "{needle}\n{stderr}");
    }
    assert!(
        pi.accept()
            .is_err_and(|e| e.kind() == std::io::ErrorKind::WouldBlock),
        "the refused deploy connected to the Pi"
    );
    assert!(!root.join("out/logs").exists(), "{stderr}");
}
