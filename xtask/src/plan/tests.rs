//! The plan's parser on what Nix 2.8 and 2.26 print (captured by
//! `nix/fixtures/capture.sh`), its classification and its refusal.

use super::*;

macro_rules! both {
    ($name:literal) => {
        [
            include_str!(concat!("../nix/fixtures/2.8/", $name, ".err")),
            include_str!(concat!("../nix/fixtures/2.26/", $name, ".err")),
        ]
    };
}

const KERNEL_DRV: &str = "/nix/store/0sr90apzzk3w23ga1ymnjy7780j1jimw-linux-6.18.0.drv";
const DEP: &str = "/nix/store/wh9rr3bc8ks634s05v6k1qkxi49pz0dc-capture-dep";

#[test]
fn parses_built_only() {
    for text in both!("dry-run") {
        let d = parse(text);
        assert_eq!(
            d.built,
            ["/nix/store/6r7lm6q5z589cf6lknfk4q2bbfamc7fh-capture-ok.drv"]
        );
        assert!(d.fetched.is_empty());
    }
}

#[test]
fn parses_fetched_only() {
    for text in both!("dry-run-fetch") {
        let d = parse(text);
        assert!(d.built.is_empty(), "{d:?}");
        assert_eq!(d.fetched, [DEP]);
        assert_eq!(d.download_mib, 0.0);
    }
}

#[test]
fn parses_built_and_fetched() {
    for text in both!("dry-run-plan") {
        let d = parse(text);
        assert_eq!(d.built, [KERNEL_DRV]);
        assert_eq!(d.fetched, [DEP]);
    }
}

#[test]
fn parses_plurals_sizes_and_noise() {
    let text = "warning: Git tree '/r' is dirty\nthese 2 derivations will be built:\n  /nix/store/a-foo-1.0.drv\n  /nix/store/b-linux-6.18.0.drv\nthese 3 paths will be fetched (12.50 MiB download, 40.00 MiB unpacked):\n  /nix/store/c-x\n  /nix/store/d-y\n  /nix/store/e-z\ndon't know how to build these paths:\n  /nix/store/f-w\n";
    let d = parse(text);
    assert_eq!(d.built.len(), 2);
    assert_eq!(d.fetched.len(), 3);
    assert_eq!(d.unknown, ["/nix/store/f-w"]);
    assert_eq!(d.download_mib, 12.5);
    assert_eq!(
        download_mib("these 2 paths will be fetched (512.0 KiB download, 1 MiB unpacked):"),
        Some(0.5)
    );
    assert_eq!(download_mib("(1.5 GiB download)"), Some(1536.0));
}

#[test]
fn names_and_heavy() {
    assert_eq!(name(KERNEL_DRV), "linux-6.18.0");
    assert_eq!(name(DEP), "capture-dep");
    assert_eq!(pname("linux-6.18.0"), "linux");
    assert_eq!(pname("linux-6.18.0-modules"), "linux");
    assert_eq!(pname("linux-firmware-20250509"), "linux-firmware");
    assert_eq!(pname("gcc-wrapper-14.2.0"), "gcc-wrapper");
    assert_eq!(pname("etc"), "etc");
    assert!(heavy("linux-6.18.0").is_some());
    assert!(heavy("linux-rpi-6.6.51-stable_20241008").is_some());
    assert!(heavy("gcc-14.2.0").is_some());
    assert!(heavy("rustc-1.86.0").is_some());
    assert!(heavy("go-1.24.2").is_some());
    for light in [
        "linux-firmware-20250509",
        "gcc-wrapper-14.2.0",
        "go-md2man-2.0.6",
        "nixos-system-rpi-box-03-26.05",
        "etc",
        "unit-sshd.service",
        "linux-headers-6.18",
    ] {
        assert_eq!(heavy(light), None, "{light}");
    }
}

#[test]
fn reads_the_system_of_a_drv() {
    let aterm = r#"Derive([("out","/nix/store/x-linux-6.18.0","","")],[],[],"aarch64-linux","/bin/sh",[],[("builder","/bin/sh"),("name","linux-6.18.0"),("system","aarch64-linux")])"#;
    assert_eq!(system_of(aterm).as_deref(), Some("aarch64-linux"));
    assert_eq!(system_of("Derive([])"), None);
}

fn plan(text: &str, host: Option<&str>, arch: &str, system: &str) -> Plan {
    let system = system.to_string();
    Plan::new(parse(text), host.map(String::from), arch, move |_| {
        Some(system.clone())
    })
}

#[test]
fn refuses_an_emulated_kernel_only() {
    for text in both!("dry-run-plan") {
        let p = plan(text, None, "x86_64", "aarch64-linux");
        assert_eq!(
            p.line(),
            "plan: 1 derivation built here (1 under QEMU, emulated aarch64; 1 heavy), 1 path fetched (0.0 MiB download)"
        );
        let why = p.refusal("cargo xtask sd a").unwrap();
        assert!(why.contains("linux-6.18.0 (a Linux kernel)"), "{why}");
        for way in [
            "--build-host user@machine",
            "--allow-slow-build",
            "binary cache",
        ] {
            assert!(why.contains(way), "{why}");
        }
        assert!(check(&p, "cargo xtask sd a", false).is_err());
        assert!(check(&p, "cargo xtask sd a", true).is_ok());
        // Native: on a build host, on an aarch64 CPU, or an x86_64 derivation.
        assert!(
            plan(text, Some("pi@arm"), "x86_64", "aarch64-linux")
                .refusal("x")
                .is_none()
        );
        assert!(
            plan(text, None, "aarch64", "aarch64-linux")
                .refusal("x")
                .is_none()
        );
        let native = plan(text, None, "x86_64", "x86_64-linux");
        assert!(native.refusal("x").is_none());
        assert!(
            native
                .render()
                .contains("build linux-6.18.0  (native x86_64)  HEAVY: a Linux kernel"),
            "{}",
            native.render()
        );
        assert!(
            p.render()
                .contains("build linux-6.18.0  (under QEMU)  HEAVY")
        );
        assert!(
            plan(text, Some("pi@arm"), "x86_64", "aarch64-linux")
                .line()
                .contains("built on pi@arm (native aarch64; 1 heavy)")
        );
    }
}

#[test]
fn a_cached_closure_plans_nothing_heavy() {
    for text in both!("dry-run-fetch") {
        let p = plan(text, None, "x86_64", "aarch64-linux");
        assert_eq!(
            p.line(),
            "plan: 0 derivations built here (0 under QEMU, emulated aarch64; 0 heavy), 1 path fetched (0.0 MiB download)"
        );
        assert!(p.refusal("x").is_none());
    }
}
