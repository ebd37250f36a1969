//! `list`, `check`, `add-key`, `new-host`, `completions` on fixture fleets.

mod common;

use std::fs;

use common::{TEST_KEY, fixture_fleet, prerequisite, xtask};
use predicates::prelude::*;

fn nix_ready() -> bool {
    prerequisite(common::need_nix())
}

#[test]
fn no_arguments_lists_the_commands() {
    let out = assert_cmd::Command::cargo_bin("xtask")
        .unwrap()
        .assert()
        .failure();
    let text = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(text.contains("Usage: cargo xtask"), "{text}");
    for c in ["list", "check", "add-key", "new-host", "completions"] {
        assert!(text.contains(c), "`{c}` missing from:\n{text}");
    }
}

#[test]
fn unknown_command_is_refused() {
    assert_cmd::Command::cargo_bin("xtask")
        .unwrap()
        .arg("frobnicate")
        .assert()
        .code(2)
        .stderr(predicate::str::contains(
            "unrecognized subcommand 'frobnicate'",
        ));
}

#[test]
fn list_shows_the_fleet() {
    let fleet = fixture_fleet();
    xtask(fleet.path())
        .arg("list")
        .assert()
        .success()
        .stdout(predicate::str::contains("rpi-box-01").and(predicate::str::contains("pi4")))
        .stdout(
            predicate::str::contains("rpi-box-03")
                .and(predicate::str::contains("rpi-box-03.local")),
        );
}

#[test]
fn list_json_is_machine_readable() {
    let fleet = fixture_fleet();
    let out = xtask(fleet.path())
        .args(["list", "--json"])
        .assert()
        .success();
    let hosts: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let names: Vec<&str> = hosts
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["rpi-box-01", "rpi-box-03", "rpi-zero-01"]);
    assert_eq!(hosts[0]["port"], 22);
    assert_eq!(hosts[0]["user"], "root");
    assert_eq!(hosts[2]["model"], "zero2w");
}

#[test]
fn check_passes_on_a_good_fleet_and_nix_agrees() {
    if !nix_ready() {
        return;
    }
    let fleet = fixture_fleet();
    common::give_wifi_password(fleet.path());
    let out = xtask(fleet.path()).arg("check").assert().success();
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    // The real nix commands ran (echoed before they ran).
    assert!(stderr.contains("$ nix-instantiate --parse"), "{stderr}");
    assert!(stderr.contains("eval --json"), "{stderr}");
    out.stdout(predicate::str::contains("✓ 3 host(s), no problems"));
}

/// A fleet with one of every mistake: `check` must report each, with its line.
#[test]
fn check_reports_every_problem_with_file_and_line() {
    if !nix_ready() {
        return;
    }
    let fleet = fixture_fleet();
    let root = fleet.path();
    fs::write(
        root.join("hosts/fleet.toml"),
        r#"[[host]]
name = "rpi-box-01"
model = "pi4"
address = "192.0.2.1"
colour = "red"

[[host]]
name = "rpi-box-03"
model = "pi5"
address = "192.0.2.3"

[[host]]
name = "Bad_Name"
model = "pi3"
address = "192.0.2.4"

[[host]]
name = "rpi-box-01"
model = "pi3"
address = "192.0.2.1"

[[host]]
name = "no-folder"
model = "pi4"
address = "192.0.2.9"
"#,
    )
    .unwrap();
    fs::write(
        root.join("hosts/rpi-box-01/default.nix"),
        "{ ... }: {\n  broken = ;\n}\n",
    )
    .unwrap();
    fs::write(
        root.join("keys/authorized_keys"),
        "ssh-ed25519 AAAA...your-public-key\n-----BEGIN OPENSSH PRIVATE KEY-----\n",
    )
    .unwrap();
    let mut lock = fs::read_to_string(root.join("flake.lock")).unwrap();
    lock = lock.replace("\"narHash\"", "\"narHashGone\"");
    fs::write(root.join("flake.lock"), lock).unwrap();

    let out = xtask(root).args(["check", "--json"]).assert().failure();
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    assert_eq!(report["ok"], false);
    let problems: Vec<String> = report["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| {
            format!(
                "{}:{}: {}",
                p["file"].as_str().unwrap(),
                p["line"],
                p["message"].as_str().unwrap()
            )
        })
        .collect();
    let expect = [
        "hosts/fleet.toml:5: unknown key `colour`",
        "hosts/fleet.toml:9: host `rpi-box-03`: unknown model `pi5`",
        "hosts/fleet.toml:13: `Bad_Name` is not a valid host name",
        "hosts/fleet.toml:17: host name `rpi-box-01` is used twice",
        "hosts/fleet.toml:17: address 192.0.2.1:22 of `rpi-box-01` is already used",
        "hosts/fleet.toml:22: host `no-folder` has no hosts/no-folder/default.nix",
        "hosts/rpi-zero-01:0: folder hosts/rpi-zero-01 has no [[host]] entry",
        "flake.nix:0: `nix eval .#inventory` failed",
        "keys/authorized_keys:1: not a usable SSH public key",
        "keys/authorized_keys:2: not a usable SSH public key: this is a private key",
        "hosts/fleet.toml:1: host `rpi-box-01`: the image would be unreachable",
        "flake.lock:3: input `agenix` has no narHash",
        "flake.lock:26: input `nixpkgs` has no narHash",
        "hosts/rpi-box-01/default.nix:2: does not parse",
    ];
    // A host with another problem still owns its folder.
    assert!(
        !problems
            .iter()
            .any(|p| p.contains("folder hosts/rpi-box-03")),
        "{}",
        problems.join("\n")
    );
    for e in expect {
        assert!(
            problems.iter().any(|p| p.starts_with(e)),
            "missing `{e}` in:\n{}",
            problems.join("\n")
        );
    }
    // The human form carries the fix and the same lines.
    let out = xtask(root).arg("check").assert().failure();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(text.contains("fix: run `cargo xtask add-key`"), "{text}");
    let stderr = String::from_utf8_lossy(&out.get_output().stderr).to_string();
    assert!(
        stderr.contains("error: ") && stderr.contains("problem(s) in the fleet definition"),
        "{stderr}"
    );
}

/// When flake.nix stops reading the inventory, the comparison with the
/// xtask's view catches it: the proof of one source of truth.
#[test]
fn check_catches_a_flake_that_disagrees_with_the_inventory() {
    if !nix_ready() {
        return;
    }
    let fleet = fixture_fleet();
    let root = fleet.path();
    let lib = fs::read_to_string(root.join("lib/inventory.nix")).unwrap();
    fs::write(
        root.join("lib/inventory.nix"),
        lib.replace("port = h.port or 22;", "port = 2222;"),
    )
    .unwrap();
    xtask(root)
        .arg("check")
        .assert()
        .failure()
        .stdout(predicate::str::contains(
            "inventory.hosts.rpi-box-01.port: xtask has 22, nix has 2222",
        ));
}

#[test]
fn add_key_adds_once() {
    let fleet = fixture_fleet();
    let root = fleet.path();
    fs::write(root.join("keys/authorized_keys"), "# admins\n").unwrap();
    let key = root.join("me.pub");
    fs::write(&key, format!("{TEST_KEY}\n")).unwrap();

    xtask(root)
        .arg("add-key")
        .arg(&key)
        .assert()
        .success()
        .stdout(predicate::str::contains("added ssh-ed25519"));
    xtask(root)
        .arg("add-key")
        .arg(&key)
        .assert()
        .success()
        .stdout(predicate::str::contains("already an admin key"));
    let text = fs::read_to_string(root.join("keys/authorized_keys")).unwrap();
    assert_eq!(text, format!("# admins\n{TEST_KEY}\n"));
}

#[test]
fn add_key_uses_home_ssh_by_default() {
    let fleet = fixture_fleet();
    let root = fleet.path();
    fs::write(root.join("keys/authorized_keys"), "").unwrap();
    let home = tempfile::tempdir().unwrap();
    fs::create_dir(home.path().join(".ssh")).unwrap();
    fs::write(home.path().join(".ssh/id_ed25519.pub"), TEST_KEY).unwrap();
    xtask(root)
        .arg("add-key")
        .env("HOME", home.path())
        .assert()
        .success();
    assert_eq!(
        fs::read_to_string(root.join("keys/authorized_keys")).unwrap(),
        format!("{TEST_KEY}\n")
    );
}

#[test]
fn add_key_refuses_private_keys_and_garbage() {
    let fleet = fixture_fleet();
    let root = fleet.path();
    let before = fs::read_to_string(root.join("keys/authorized_keys")).unwrap();
    let private = root.join("id_ed25519");
    fs::write(&private, "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAA\n-----END OPENSSH PRIVATE KEY-----\n").unwrap();
    xtask(root)
        .arg("add-key")
        .arg(&private)
        .assert()
        .failure()
        .stderr(predicate::str::contains("it is a private key"));
    let garbage = root.join("x.pub");
    fs::write(&garbage, "ssh-ed25519 AAAA-not-base64 me\n").unwrap();
    xtask(root)
        .arg("add-key")
        .arg(&garbage)
        .assert()
        .failure()
        .stderr(predicate::str::contains("not base64"));
    assert_eq!(
        fs::read_to_string(root.join("keys/authorized_keys")).unwrap(),
        before
    );
}

#[test]
fn new_host_adds_entry_and_folder() {
    let fleet = fixture_fleet();
    let root = fleet.path();
    xtask(root)
        .args([
            "new-host",
            "rpi-box-07",
            "--model",
            "pi4",
            "--address",
            "198.51.100.3",
            "--tag",
            "lab",
            "--port",
            "2200",
        ])
        .assert()
        .success()
        .stdout(predicate::str::contains("cargo xtask sd rpi-box-07"));
    assert!(root.join("hosts/rpi-box-07/default.nix").is_file());
    let out = xtask(root).args(["list", "--json"]).assert().success();
    let hosts: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let new = hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "rpi-box-07")
        .unwrap();
    assert_eq!(new["address"], "198.51.100.3");
    assert_eq!(new["port"], 2200);
    assert_eq!(new["tags"], serde_json::json!(["lab"]));
    if nix_ready() {
        common::give_wifi_password(root);
        xtask(root).arg("check").assert().success();
    }
}

#[test]
fn new_host_refuses_used_name_and_address() {
    let fleet = fixture_fleet();
    let root = fleet.path();
    let before = fs::read_to_string(root.join("hosts/fleet.toml")).unwrap();
    xtask(root)
        .args([
            "new-host",
            "rpi-box-01",
            "--model",
            "pi4",
            "--address",
            "203.0.113.9",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("`rpi-box-01` is used twice"));
    xtask(root)
        .args([
            "new-host",
            "fresh",
            "--model",
            "pi4",
            "--address",
            "rpi-box-01.local",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "`rpi-box-01.local` is not the name this Pi publishes over mDNS, which is `fresh.local`",
        ));
    xtask(root)
        .args([
            "new-host",
            "zero",
            "--model",
            "zero2w",
            "--address",
            "203.0.113.8",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains("no Ethernet"));
    assert_eq!(
        fs::read_to_string(root.join("hosts/fleet.toml")).unwrap(),
        before
    );
    assert!(!root.join("hosts/fresh").exists());
}

#[test]
fn new_host_dry_run_changes_nothing() {
    let fleet = fixture_fleet();
    let root = fleet.path();
    let before = fs::read_to_string(root.join("hosts/fleet.toml")).unwrap();
    xtask(root)
        .args([
            "new-host",
            "spare",
            "--model",
            "pi3",
            "--address",
            "192.0.2.77",
            "--dry-run",
        ])
        .assert()
        .success()
        .stdout(
            predicate::str::contains("would append")
                .and(predicate::str::contains("name = \"spare\"")),
        );
    assert_eq!(
        fs::read_to_string(root.join("hosts/fleet.toml")).unwrap(),
        before
    );
    assert!(!root.join("hosts/spare").exists());
}

#[test]
fn completions_for_bash() {
    assert_cmd::Command::cargo_bin("xtask")
        .unwrap()
        .args(["completions", "bash"])
        .assert()
        .success()
        .stdout(predicate::str::contains("new-host"));
}

#[test]
fn wrong_flake_dir_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    xtask(dir.path()).arg("list").assert().failure().stderr(
        predicate::str::starts_with("error: cannot read")
            .and(predicate::str::contains("pass --flake <dir>")),
    );
}

fn list_host(root: &std::path::Path, name: &str) -> serde_json::Value {
    let out = xtask(root).args(["list", "--json"]).assert().success();
    let hosts: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    hosts
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == name)
        .unwrap_or_else(|| panic!("no host {name} in {hosts}"))
        .clone()
}

/// Without --address a new host is `<name>.local`, which it publishes
/// over mDNS; `check` says so per host.
#[test]
fn new_host_defaults_to_its_mdns_name_and_check_says_so() {
    let fleet = fixture_fleet();
    let root = fleet.path();
    xtask(root)
        .args(["new-host", "rpi-box-09", "--model", "pi3"])
        .assert()
        .success()
        .stdout(predicate::str::contains("(pi3, rpi-box-09.local)"));
    let text = fs::read_to_string(root.join("hosts/fleet.toml")).unwrap();
    assert!(
        text.ends_with("name = \"rpi-box-09\"\nmodel = \"pi3\"\naddress = \"rpi-box-09.local\"\n"),
        "{text}"
    );
    assert_eq!(
        list_host(root, "rpi-box-09")["static_ipv4"],
        serde_json::Value::Null
    );
    if !nix_ready() {
        return;
    }
    common::give_wifi_password(root);
    let out = xtask(root).args(["check", "--json"]).assert().success();
    let report: serde_json::Value = serde_json::from_slice(&out.get_output().stdout).unwrap();
    let reach: Vec<(&str, &str)> = report["addressing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| (a["host"].as_str().unwrap(), a["reach"].as_str().unwrap()))
        .collect();
    assert_eq!(
        reach,
        [
            ("rpi-box-01", "mdns"),
            ("rpi-box-03", "mdns"),
            ("rpi-zero-01", "mdns"),
            ("rpi-box-09", "mdns")
        ]
    );
    xtask(root)
        .arg("check")
        .assert()
        .success()
        .stdout(predicate::str::contains(
            "info: rpi-box-09: mDNS name rpi-box-09.local (published by the Pi",
        ));
}

/// A static address: the xtask and Nix read it alike (check compares both
/// views), SSH goes to the address alone, and check names what each host
/// relies on, as information, not a problem.
#[test]
fn static_address_is_read_alike_by_nix_and_the_xtask() {
    let fleet = fixture_fleet();
    let root = fleet.path();
    xtask(root)
        .args([
            "new-host",
            "rpi-box-10",
            "--model",
            "pi4",
            "--address",
            "192.0.2.10/24",
            "--gateway",
            "192.0.2.1",
            "--dns",
            "192.0.2.1",
            "--dns",
            "198.51.100.53",
        ])
        .assert()
        .success();
    xtask(root)
        .args([
            "new-host",
            "rpi-box-11",
            "--model",
            "pi4",
            "--address",
            "192.0.2.11",
        ])
        .assert()
        .success();
    let h = list_host(root, "rpi-box-10");
    assert_eq!(h["address"], "192.0.2.10");
    assert_eq!(
        h["static_ipv4"],
        serde_json::json!({"address": "192.0.2.10", "prefix_length": 24, "gateway": "192.0.2.1", "dns": ["192.0.2.1", "198.51.100.53"]})
    );
    if !nix_ready() {
        return;
    }
    common::give_wifi_password(root);
    let out = xtask(root).arg("check").assert().success();
    let text = String::from_utf8_lossy(&out.get_output().stdout).to_string();
    assert!(
        text.contains(
            "info: rpi-box-10: static 192.0.2.10/24 via 192.0.2.1 on eth0 (set by the Pi itself)"
        ),
        "{text}"
    );
    assert!(
        text.contains("info: rpi-box-11: 192.0.2.11 only if the router hands it out"),
        "{text}"
    );
    assert!(text.contains("✓ 5 host(s), no problems"), "{text}");

    // A lib/inventory.nix that reads the static address differently is caught.
    let lib = fs::read_to_string(root.join("lib/inventory.nix")).unwrap();
    fs::write(
        root.join("lib/inventory.nix"),
        lib.replace("dns = h.dns or [ ];", "dns = [ ];"),
    )
    .unwrap();
    xtask(root).arg("check").assert().failure().stdout(predicate::str::contains(
        "inventory.hosts.rpi-box-10.static_ipv4.dns: xtask has [\"192.0.2.1\",\"198.51.100.53\"], nix has []",
    ));
}

#[test]
fn static_address_needs_gateway_and_dns() {
    let fleet = fixture_fleet();
    let root = fleet.path();
    xtask(root)
        .args([
            "new-host",
            "rpi-box-12",
            "--model",
            "pi4",
            "--address",
            "192.0.2.12/24",
        ])
        .assert()
        .failure()
        .stderr(
            predicate::str::contains("static address 192.0.2.12/24 has no `gateway`")
                .and(predicate::str::contains("has no `dns`")),
        );
    xtask(root)
        .args([
            "new-host",
            "rpi-box-12",
            "--model",
            "pi4",
            "--address",
            "192.0.2.12",
            "--gateway",
            "192.0.2.1",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "`gateway` only applies to a static address",
        ));
    assert!(!root.join("hosts/rpi-box-12").exists());
}

/// A Wi-Fi host needs the fleet's Wi-Fi country; new-host can write it.
#[test]
fn wifi_host_needs_the_fleet_wifi_country() {
    let fleet = fixture_fleet();
    let root = fleet.path();
    let inventory = root.join("hosts/fleet.toml");
    let text = fs::read_to_string(&inventory).unwrap();
    let without = text.replace("[fleet]\nwifi_country = \"GB\"\n", "");
    assert_ne!(text, without, "the example sets the Wi-Fi country");
    fs::write(&inventory, &without).unwrap();
    xtask(root).arg("check").assert().failure().stdout(
        predicate::str::contains(
            "host `rpi-zero-01` joins Wi-Fi, but the fleet has no Wi-Fi country (regulatory domain)",
        )
        .and(predicate::str::contains("wifi_country = \"GB\"")),
    );
    // A fleet without Wi-Fi hosts needs no country; new-host adds the first.
    let zero01 = without.find("[[host]]\nname = \"rpi-zero-01\"").unwrap();
    let without = without[..zero01].trim_end().to_string() + "\n";
    fs::write(&inventory, &without).unwrap();
    fs::remove_dir_all(root.join("hosts/rpi-zero-01")).unwrap();
    let zero = |extra: &[&str]| {
        let mut args = vec![
            "new-host",
            "rpi-zero-02",
            "--model",
            "zero2w",
            "--wifi",
            "home-wifi",
        ];
        args.extend_from_slice(extra);
        xtask(root).args(args).assert()
    };
    zero(&[]).failure().stderr(
        predicate::str::contains("no Wi-Fi country")
            .and(predicate::str::contains("or pass --wifi-country <CODE>")),
    );
    zero(&["--wifi-country", "UK"])
        .failure()
        .stderr(predicate::str::contains(
            "the code of the United Kingdom is \"GB\"",
        ));
    zero(&["--wifi-country", "DE", "--dry-run"])
        .success()
        .stdout(predicate::str::contains(
            "would set wifi_country = \"DE\" in [fleet]",
        ));
    assert_eq!(fs::read_to_string(&inventory).unwrap(), without);
    zero(&["--wifi-country", "DE"]).success();
    let now = fs::read_to_string(&inventory).unwrap();
    let fleet_at = now.find("\n[fleet]\nwifi_country = \"DE\"\n\n[[host]]\n");
    assert!(
        fleet_at.is_some_and(|at| !now[..at].contains("\n[[host]]")),
        "[fleet] goes before the first host:\n{now}"
    );
    let nix = fs::read_to_string(root.join("hosts/rpi-zero-02/default.nix")).unwrap();
    assert!(
        nix.contains("pi-nixos.zero2w.brcmfmacWorkaround = false;"),
        "{nix}"
    );
    // One country for the whole fleet.
    xtask(root)
        .args([
            "new-host",
            "rpi-zero-03",
            "--model",
            "zero2w",
            "--wifi",
            "w",
            "--wifi-country",
            "FR",
        ])
        .assert()
        .failure()
        .stderr(predicate::str::contains(
            "already has wifi_country = \"DE\"",
        ));
    if nix_ready() {
        // Its password, as the new-host's next step says.
        xtask(root)
            .args(["wifi", "rpi-zero-02"])
            .write_stdin(format!("{}\n", common::WIFI_PASSWORD))
            .assert()
            .success();
        xtask(root).arg("check").assert().success();
        // Nix reads the country as the xtask does.
        let lib = fs::read_to_string(root.join("lib/inventory.nix")).unwrap();
        fs::write(
            root.join("lib/inventory.nix"),
            lib.replace(".wifi_country or null", ".country or null"),
        )
        .unwrap();
        xtask(root)
            .arg("check")
            .assert()
            .failure()
            .stdout(predicate::str::contains(
                "inventory.fleet.wifi_country: xtask has \"DE\", nix has null",
            ));
    }
}

/// `nix flake check` evaluates what `checks` lists: check proves it lists
/// every host (read without nixpkgs).
#[test]
fn check_catches_flake_checks_that_miss_hosts() {
    if !nix_ready() {
        return;
    }
    let fleet = fixture_fleet();
    let root = fleet.path();
    let flake = fs::read_to_string(root.join("flake.nix")).unwrap();
    let broken = flake.replace(
        "checks.aarch64-linux = builtins.mapAttrs",
        "checks.aarch64-linux = builtins.removeAttrs (builtins.mapAttrs",
    );
    let broken = broken.replace(
        "(_: system: system.config.system.build.toplevel) hosts;",
        "(_: system: system.config.system.build.toplevel) hosts) [ \"rpi-box-03\" ];",
    );
    assert_ne!(broken, flake);
    fs::write(root.join("flake.nix"), broken).unwrap();
    xtask(root).arg("check").assert().failure().stdout(predicate::str::contains(
        "flake.nix: the flake's checks do not cover the fleet: checks.aarch64-linux: xtask has [\"rpi-box-01\",\"rpi-box-03\",\"rpi-zero-01\"], nix has [\"rpi-box-01\",\"rpi-zero-01\"]",
    ));
}

/// `profile` (lean by default, or generic: the way back) is read alike by
/// Nix and the xtask; a Nix reader that drops it, and a value other than
/// the two, are caught with the line.
#[test]
fn profile_is_read_alike_by_nix_and_the_xtask() {
    let fleet = fixture_fleet();
    let root = fleet.path();
    let toml = fs::read_to_string(root.join("hosts/fleet.toml")).unwrap();
    let generic = toml.replace(
        "name = \"rpi-box-03\"\n",
        "name = \"rpi-box-03\"\nprofile = \"generic\"\n",
    );
    assert_ne!(generic, toml);
    fs::write(root.join("hosts/fleet.toml"), &generic).unwrap();
    assert_eq!(list_host(root, "rpi-box-03")["profile"], "generic");
    assert_eq!(list_host(root, "rpi-box-01")["profile"], "lean");
    if !nix_ready() {
        return;
    }
    common::give_wifi_password(root);
    xtask(root)
        .arg("check")
        .assert()
        .success()
        .stdout(predicate::str::contains("✓ 3 host(s), no problems"));

    let lib = fs::read_to_string(root.join("lib/inventory.nix")).unwrap();
    fs::write(
        root.join("lib/inventory.nix"),
        lib.replace("profile = h.profile or \"lean\";", "profile = \"lean\";"),
    )
    .unwrap();
    xtask(root)
        .arg("check")
        .assert()
        .failure()
        .stdout(predicate::str::contains(
            "inventory.hosts.rpi-box-03.profile: xtask has \"generic\", nix has \"lean\"",
        ));
    fs::write(root.join("lib/inventory.nix"), lib).unwrap();

    let line = generic
        .lines()
        .position(|l| l == "profile = \"generic\"")
        .unwrap()
        + 1;
    fs::write(
        root.join("hosts/fleet.toml"),
        generic.replace("profile = \"generic\"", "profile = \"minimal\""),
    )
    .unwrap();
    xtask(root)
        .arg("check")
        .assert()
        .failure()
        .stdout(predicate::str::contains(format!(
            "hosts/fleet.toml:{line}: host `rpi-box-03`: unknown profile `minimal`"
        )));
}
