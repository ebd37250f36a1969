//! modules/hardware/sd-image-native.nix: the SD card assembled with x86_64
//! tools (`system.build.sdImageNative`), evaluated and built by real Nix
//! 2.26 against stand-ins for nixpkgs (tests/fixtures/sd-native: nixpkgs'
//! own make-ext4-fs.nix, closure-info.nix and sd-image.nix builds, copied
//! verbatim, run with this machine's mkfs.ext4, sfdisk, mkfs.vfat, mtools,
//! faketime, fakeroot and zstd). The native image builds on a Nix that
//! cannot build aarch64 at all, and equals nixpkgs' aarch64 image of the
//! same system: same partition table, byte-identical FAT partition, same
//! ext4 label, UUID, files and store registration.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{need_program, prerequisite};

const MIB: usize = 1 << 20;

fn ready() -> bool {
    prerequisite(
        [
            ("faketime", "faketime"),
            ("fakeroot", "fakeroot"),
            ("jq", "jq"),
            ("gawk", "gawk"),
            ("zstd", "zstd"),
            ("sfdisk", "fdisk"),
            ("partx", "util-linux"),
            ("blkid", "util-linux"),
            ("mkfs.vfat", "dosfstools"),
            ("mcopy", "mtools"),
            ("debugfs", "e2fsprogs"),
        ]
        .iter()
        .find_map(|(p, pkg)| need_program(p, pkg))
        .or_else(common::need_nix),
    )
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).to_string()
}

/// The fixture host evaluated with the repository's module.
fn host() -> String {
    host_with("")
}

/// The fixture host with more arguments (`name = value;`).
fn host_with(args: &str) -> String {
    let repo = common::repo_root();
    format!(
        "(import {} {{ module = {}; {args} }})",
        repo.join("xtask/tests/fixtures/sd-native/host.nix")
            .display(),
        repo.join("modules/hardware/sd-image-native.nix").display()
    )
}

/// `.ATTR` of the fixture host.
fn expr(attr: &str) -> String {
    format!("{}.{attr}", host())
}

/// `nix ARGS --impure --expr EXPR` with the test's private Nix and
/// `NIX_CONFIG`, its stdout.
fn nix(args: &[&str], expression: &str, config: &str) -> String {
    let out = common::command("nix")
        .args(["--extra-experimental-features", "nix-command"])
        .args(args)
        .args(["--impure", "--expr", expression])
        .env("NIX_CONFIG", config)
        .output()
        .unwrap();
    assert!(out.status.success(), "nix {args:?}: {}", text(&out.stderr));
    text(&out.stdout).trim().to_string()
}

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The raw image inside a built card (`<out>/sd-image/pi.img.zst`).
fn raw_image(out: &str, dir: &Path, name: &str) -> Vec<u8> {
    let zst = Path::new(out).join("sd-image/pi.img.zst");
    let raw = dir.join(name);
    run(
        "zstd",
        &[
            "-q",
            "-d",
            zst.to_str().unwrap(),
            "-o",
            raw.to_str().unwrap(),
        ],
    );
    std::fs::read(raw).unwrap()
}

/// Partition `n` (1-based) of an MBR image, as sfdisk's JSON describes it.
fn partition<'a>(table: &serde_json::Value, image: &'a [u8], n: usize) -> &'a [u8] {
    let p = &table["partitiontable"]["partitions"][n - 1];
    let start = p["start"].as_u64().unwrap() as usize * 512;
    let size = p["size"].as_u64().unwrap() as usize * 512;
    &image[start..start + size]
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn debugfs(fs: &Path, request: &str) -> String {
    run("debugfs", &["-R", request, fs.to_str().unwrap()])
}

/// What blkid reads in a filesystem image: `LABEL=…`, `UUID=…`, `TYPE=…`.
fn blkid(fs: &Path) -> String {
    run("blkid", &["-p", "-o", "export", fs.to_str().unwrap()])
}

#[test]
fn native_image_needs_no_aarch64_and_equals_nixpkgs_image() {
    if !ready() {
        return;
    }
    // Which derivation is built for which system.
    let systems = nix(
        &["eval", "--json"],
        &format!(
            "let h = {}; in {{ card = h.native.system; rootfs = h.native.rootFilesystemImage.system; emulated = h.emulated.system; emulatedRootfs = h.emulatedRootfs.system; }}",
            host()
        ),
        "",
    );
    assert_eq!(
        systems,
        r#"{"card":"x86_64-linux","emulated":"aarch64-linux","emulatedRootfs":"aarch64-linux","rootfs":"x86_64-linux"}"#
    );

    // The native image: this private Nix accepts no aarch64-linux
    // derivation, so the build fails if anything in it needs one.
    let native = nix(
        &["build", "--no-link", "--print-out-paths"],
        &expr("native"),
        "",
    );
    // nixpkgs' image, every derivation aarch64-linux (their builders are
    // this machine's tools, so Nix only has to accept the platform).
    let emulated = nix(
        &["build", "--no-link", "--print-out-paths"],
        &expr("emulated"),
        "extra-platforms = aarch64-linux",
    );
    let toplevel = nix(&["eval", "--raw"], &expr("toplevel"), "");
    let kernel = nix(&["eval", "--raw"], &expr("kernel"), "");

    let dir = tempfile::tempdir().unwrap();
    let dir = dir.path();
    let n = raw_image(&native, dir, "native.img");
    let e = raw_image(&emulated, dir, "emulated.img");

    // The partition table: sd-image.nix's, the same in both.
    let table = |name: &str| -> serde_json::Value {
        serde_json::from_str(&run(
            "sfdisk",
            &["--json", dir.join(name).to_str().unwrap()],
        ))
        .unwrap()
    };
    let (tn, te) = (table("native.img"), table("emulated.img"));
    let t = &tn["partitiontable"];
    assert_eq!(t["label"], "dos", "{tn}");
    assert_eq!(t["id"], "0x2178694e", "{tn}");
    let p = &t["partitions"];
    assert_eq!(p[0]["start"], 8 * MIB / 512, "FIRMWARE at 8 MiB: {tn}");
    assert_eq!(p[0]["size"], 30 * MIB / 512, "{tn}");
    assert_eq!(p[0]["type"], "b", "{tn}");
    assert_eq!(p[0]["bootable"], true, "{tn}");
    assert_eq!(p[1]["start"], 38 * MIB / 512, "{tn}");
    assert_eq!(p[1]["type"], "83", "{tn}");
    assert_eq!(
        n.len(),
        38 * MIB + p[1]["size"].as_u64().unwrap() as usize * 512
    );
    let strip = |v: &serde_json::Value| {
        v.to_string()
            .replace("native.img", "X")
            .replace("emulated.img", "X")
    };
    assert_eq!(strip(&tn), strip(&te));
    assert_eq!(n[..512], e[..512], "the MBR differs");

    // The FAT partition: byte for byte.
    let (fat_n, fat_e) = (partition(&tn, &n, 1), partition(&te, &e, 1));
    assert!(fat_n == fat_e, "the FAT partitions differ");
    let fat = write(dir, "fat", fat_n);
    let id = blkid(&fat);
    for want in ["LABEL=FIRMWARE", "UUID=2178-694E", "TYPE=vfat"] {
        assert!(id.lines().any(|l| l == want), "{want}\n{id}");
    }
    run("fsck.vfat", &["-n", fat.to_str().unwrap()]);
    let fixture = common::repo_root().join("xtask/tests/fixtures/sd-native/firmware");
    for f in ["config.txt", "u-boot-rpi3.bin", "overlays/fixture.dtbo"] {
        let got = run("mtype", &["-i", fat.to_str().unwrap(), &format!("::{f}")]);
        assert_eq!(
            got,
            std::fs::read_to_string(fixture.join(f)).unwrap(),
            "{f}"
        );
    }

    // The ext4 root: label, fixed UUID, clean, the closure and its
    // registration (first boot's `nix-store --load-db` input), the same in
    // both; /boot written by the populate builder built for each side.
    let root_n = write(dir, "root-native", partition(&tn, &n, 2));
    let root_e = write(dir, "root-emulated", partition(&te, &e, 2));
    for root in [&root_n, &root_e] {
        let id = blkid(root);
        for want in [
            "LABEL=NIXOS_SD",
            "UUID=44444444-4444-4444-8888-888888888888",
            "TYPE=ext4",
        ] {
            assert!(id.lines().any(|l| l == want), "{want}\n{id}");
        }
        run("e2fsck", &["-f", "-n", root.to_str().unwrap()]);
    }
    let registration = debugfs(&root_n, "cat /nix-path-registration");
    assert_eq!(registration, debugfs(&root_e, "cat /nix-path-registration"));
    let lines: Vec<&str> = registration.lines().collect();
    let at = lines.iter().position(|l| *l == toplevel).unwrap();
    assert!(lines[at + 1].starts_with("sha256"), "{registration}");
    assert_eq!(
        &lines[at + 3..at + 6],
        ["", "1", kernel.as_str()],
        "{registration}"
    );
    assert!(lines.contains(&kernel.as_str()), "{registration}");
    let store = debugfs(&root_n, "ls -p /nix/store");
    assert_eq!(store, debugfs(&root_e, "ls -p /nix/store"));
    for path in [&toplevel, &kernel] {
        let base = path.rsplit('/').next().unwrap();
        assert!(store.contains(&format!("/{base}/")), "{base}\n{store}");
    }
    let conf_n = debugfs(&root_n, "cat /boot/extlinux/extlinux.conf");
    let conf_e = debugfs(&root_e, "cat /boot/extlinux/extlinux.conf");
    assert!(conf_n.contains("built for x86_64-linux"), "{conf_n}");
    assert!(conf_e.contains("built for aarch64-linux"), "{conf_e}");
    assert_eq!(
        conf_n.replace("x86_64-linux", "SYSTEM"),
        conf_e.replace("aarch64-linux", "SYSTEM")
    );
    assert!(
        conf_n.contains(&format!("APPEND init={toplevel}/init")),
        "{conf_n}"
    );
}

/// What the module makes, read from the evaluation: the card's build script
/// is nixpkgs' own with only the root filesystem image's path changed, and
/// depends on the native root filesystem, not on the aarch64 one; the root
/// filesystem's populate commands run the extlinux builder built for
/// x86_64, not the aarch64 one. A nixpkgs whose card script no longer names
/// the root filesystem image stops the evaluation with what to do.
#[test]
fn the_native_card_is_nixpkgs_script_with_the_native_root() {
    if !prerequisite(common::need_nix()) {
        return;
    }
    let facts = nix(
        &["eval", "--json"],
        &format!(
            r#"let
              h = {};
              inherit (h.native) rootFilesystemImage;
              has = s: infix: builtins.stringLength (builtins.replaceStrings [ infix ] [ "" ] s) != builtins.stringLength s;
              needs = s: drv: builtins.hasAttr (builtins.unsafeDiscardStringContext drv.drvPath) (builtins.getContext s);
            in {{
              script = builtins.replaceStrings [ "${{h.emulatedRootfs}}" ] [ "${{rootFilesystemImage}}" ] h.emulated.buildCommand == h.native.buildCommand;
              needsNativeRoot = needs h.native.buildCommand rootFilesystemImage;
              needsEmulatedRoot = needs h.native.buildCommand h.emulatedRootfs;
              nativeBuilder = has rootFilesystemImage.buildCommand "${{h.extlinuxBuilders.x86_64}}";
              emulatedBuilder = has rootFilesystemImage.buildCommand "${{h.extlinuxBuilders.aarch64}}";
              needsEmulatedBuilder = needs rootFilesystemImage.buildCommand h.extlinuxBuilders.aarch64;
              emulatedUsesEmulatedBuilder = has h.emulatedRootfs.buildCommand "${{h.extlinuxBuilders.aarch64}}";
            }}"#,
            host()
        ),
        "",
    );
    assert_eq!(
        facts,
        r#"{"emulatedBuilder":false,"emulatedUsesEmulatedBuilder":true,"nativeBuilder":true,"needsEmulatedBuilder":false,"needsEmulatedRoot":false,"needsNativeRoot":true,"script":true}"#
    );

    // A root filesystem image of the configuration's own: the native card
    // uses it, as nixpkgs' does.
    let own = nix(
        &["eval", "--json"],
        &format!(
            "let h = {}; in [ (h.native.buildCommand == h.emulated.buildCommand) (h.native.rootFilesystemImage == h.emulatedRootfs) ]",
            host_with("ownRootfs = builtins.toFile \"own-root.img\" \"\";")
        ),
        "",
    );
    assert_eq!(own, "[true,true]");

    // A nixpkgs whose card script names the root filesystem image otherwise.
    let dir = tempfile::tempdir().unwrap();
    let changed = dir.path().join("sd-image-build.nix");
    let original = std::fs::read_to_string(
        common::repo_root().join("xtask/tests/fixtures/sd-native/sd-image-build.nix"),
    )
    .unwrap();
    let elsewhere = original
        .replace(
            "root_fs=${config.sdImage.rootFilesystemImage}",
            "root_fs=$rootfs",
        )
        .replace("\"${config.sdImage.rootFilesystemImage}\"", "$rootfs");
    assert_ne!(elsewhere, original);
    std::fs::write(&changed, elsewhere).unwrap();
    let out = common::command("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "eval",
            "--raw",
            "--impure",
            "--expr",
        ])
        .arg(format!(
            "{}.native.drvPath",
            host_with(&format!("sdImageBuild = {};", changed.display()))
        ))
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("sd-image.nix's buildCommand no longer names sdImage.rootFilesystemImage")
            && stderr
                .contains("build `system.build.sdImage` instead (`cargo xtask sd --build-host …`)"),
        "{stderr}"
    );
}
