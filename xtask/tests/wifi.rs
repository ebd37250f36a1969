//! `cargo xtask wifi`: a host's Wi-Fi password as its age secret
//! `wifi-<host>`, decrypted by Debian's `age` CLI with that host's key and
//! the admin key (not another host's), asked twice on a terminal; `check`
//! says when a Wi-Fi host cannot read its password; and the Nix side
//! (lib/inventory.nix → modules/secrets.nix → modules/wifi.nix) evaluated by
//! real Nix: wpa_supplicant's secrets file is agenix's path, owned so that
//! wpa_supplicant reads it, and a changed secret restarts it.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::{need_program, prerequisite};

const PASSWORD: &str = common::WIFI_PASSWORD;
const SECRET: &str = "secrets/wifi-rpi-zero-01.age";

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The fixture fleet with one admin key (the test's ~/.ssh/id_ed25519)
/// and identities for rpi-zero-01 (Wi-Fi) and rpi-box-01.
struct Fixture {
    fleet: tempfile::TempDir,
    data: tempfile::TempDir,
    home: tempfile::TempDir,
}

impl Fixture {
    fn new() -> Option<Fixture> {
        if !prerequisite(
            need_program("age", "age").or_else(|| need_program("ssh-keygen", "openssh-client")),
        ) {
            return None;
        }
        let f = Fixture {
            fleet: common::fixture_fleet(),
            data: tempfile::tempdir().unwrap(),
            home: tempfile::tempdir().unwrap(),
        };
        keygen(&f.admin());
        std::fs::copy(
            f.admin().with_extension("pub"),
            f.root().join("keys/authorized_keys"),
        )
        .unwrap();
        for h in ["rpi-zero-01", "rpi-box-01"] {
            assert!(f.run(&["identity", h], "").status.success());
        }
        Some(f)
    }

    fn root(&self) -> &Path {
        self.fleet.path()
    }

    /// `cargo xtask ARGS` (no Nix), `stdin` as its input.
    fn run(&self, args: &[&str], stdin: &str) -> std::process::Output {
        let out = assert_cmd::Command::cargo_bin("xtask")
            .unwrap()
            .arg("--flake")
            .arg(self.root())
            .env("XDG_DATA_HOME", self.data.path())
            .env("HOME", self.home.path())
            .args(args)
            .write_stdin(stdin.to_string())
            .output()
            .unwrap();
        eprintln!(
            "--- cargo xtask {}\n{}{}",
            args.join(" "),
            text(&out.stdout),
            text(&out.stderr)
        );
        out
    }

    fn host_key(&self, host: &str) -> PathBuf {
        let id = std::fs::read_to_string(self.root().join("keys/fleet-id")).unwrap();
        let id = id.lines().find(|l| !l.starts_with('#')).unwrap();
        self.data
            .path()
            .join("pi-nixos")
            .join(id)
            .join("hosts")
            .join(host)
            .join("ssh_host_ed25519_key")
    }

    fn admin(&self) -> PathBuf {
        self.home.path().join(".ssh/id_ed25519")
    }

    /// `check`'s stdout (the machine's own Nix may be too old to evaluate
    /// the flake: only the lines about secrets matter here).
    fn check(&self) -> String {
        text(&self.run(&["check"], "").stdout)
    }
}

fn keygen(path: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let st = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .status()
        .unwrap();
    assert!(st.success());
}

/// `age -d -i KEY FILE`: the plaintext, or the error.
fn age_decrypt(key: &Path, file: &Path) -> Result<String, String> {
    let out = Command::new("age")
        .arg("-d")
        .arg("-i")
        .arg(key)
        .arg(file)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(text(&out.stdout))
    } else {
        Err(text(&out.stderr))
    }
}

/// Whether any file under `dir` (Git's own folder too) holds `needle`.
fn anywhere(dir: &Path, needle: &str) -> Vec<PathBuf> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(p) = stack.pop() {
        if p.is_dir() {
            stack.extend(std::fs::read_dir(&p).unwrap().map(|e| e.unwrap().path()));
        } else if std::fs::read(&p)
            .unwrap()
            .windows(needle.len())
            .any(|w| w == needle.as_bytes())
        {
            hits.push(p);
        }
    }
    hits
}

#[test]
fn the_password_is_an_age_secret_only_its_host_and_the_admins_read() {
    let Some(f) = Fixture::new() else { return };
    let root = f.root();
    let file = root.join(SECRET);

    // Dry run: says what, asks and writes nothing.
    let out = f.run(&["wifi", "rpi-zero-01", "--dry-run"], "");
    assert!(out.status.success());
    assert_eq!(
        text(&out.stdout),
        "would write secrets/wifi-rpi-zero-01.age (the password of `home-wifi`, root:wpa_supplicant 0440 on rpi-zero-01), encrypted to: host rpi-zero-01, admin key keys/authorized_keys:1\n"
    );
    assert!(!root.join("secrets").exists());

    let out = f.run(&["wifi", "rpi-zero-01"], &format!("{PASSWORD}\n"));
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains(
            "cargo xtask deploy rpi-zero-01   # a running Pi switches to the new password"
        ),
        "{stdout}"
    );
    assert!(!stdout.contains(PASSWORD) && !text(&out.stderr).contains(PASSWORD));
    // What wpa_supplicant's secrets file holds: `psk=<password>`, for the
    // host's key and the admin's, not another host's.
    let want = format!("psk={PASSWORD}\n");
    assert_eq!(
        age_decrypt(&f.host_key("rpi-zero-01"), &file),
        Ok(want.clone())
    );
    assert_eq!(age_decrypt(&f.admin(), &file), Ok(want.clone()));
    assert!(age_decrypt(&f.host_key("rpi-box-01"), &file).is_err());
    let show = f.run(&["secret", "show", "wifi-rpi-zero-01"], "");
    assert_eq!(text(&show.stdout), want);
    // Its entry: that host only, readable by wpa_supplicant's group.
    let toml = std::fs::read_to_string(root.join("secrets/secrets.toml")).unwrap();
    assert!(
        toml.contains(
            "[\"wifi-rpi-zero-01\"]\nhosts = [\"rpi-zero-01\"]\nowner = \"root\"\ngroup = \"wpa_supplicant\"\nmode = \"0440\"\n"
        ),
        "{toml}"
    );
    assert!(anywhere(root, PASSWORD).is_empty(), "in the repository");
    assert!(!f.check().contains("wifi-rpi-zero-01"));

    // A new password: a new file, the new value.
    let before = std::fs::read(&file).unwrap();
    let out = f.run(&["wifi", "rpi-zero-01"], "another fine passphrase\n");
    assert!(out.status.success());
    assert_ne!(std::fs::read(&file).unwrap(), before);
    assert_eq!(
        age_decrypt(&f.host_key("rpi-zero-01"), &file),
        Ok("psk=another fine passphrase\n".to_string())
    );

    // Refusals change nothing.
    let now = std::fs::read(&file).unwrap();
    for (args, stdin, message) in [
        (
            &["wifi", "rpi-zero-01"][..],
            "short\n",
            "the Wi-Fi password of `home-wifi` is not usable: it is 5 characters long; a WPA password has 8 to 63; nothing was written",
        ),
        (
            &["wifi", "rpi-zero-01"][..],
            "line one is long\nline two\n",
            "stdin has more than one line: give only the Wi-Fi password of `home-wifi`",
        ),
        (
            &["wifi", "rpi-box-01"][..],
            "correct horse\n",
            "host `rpi-box-01` has no `wifi` in hosts/fleet.toml: add `wifi = \"<SSID>\"` to its entry first",
        ),
        (&["wifi", "nope"][..], "correct horse\n", "nope"),
    ] {
        let out = f.run(args, stdin);
        assert!(!out.status.success(), "{args:?} succeeded");
        let err = text(&out.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
        assert_eq!(std::fs::read(&file).unwrap(), now);
    }
    assert!(!root.join("secrets/wifi-rpi-box-01.age").exists());
}

/// `check`: a Wi-Fi host without its secret, one whose secret is not
/// encrypted to its (new) key, one that does not read it, one whose secret
/// wpa_supplicant could not read: each at its line, with the fix.
#[test]
fn check_says_when_a_wifi_host_cannot_read_its_password() {
    let Some(f) = Fixture::new() else { return };
    let root = f.root();
    let wl = common::wifi_line(root);
    let out = f.check();
    assert!(
        out.contains(&format!(
            "hosts/fleet.toml:{wl}: host `rpi-zero-01` joins the Wi-Fi `home-wifi` but has no Wi-Fi secret (secrets/wifi-rpi-zero-01.age), so it would come up without Wi-Fi\n    fix: `cargo xtask wifi rpi-zero-01` (asks for the password), commit secrets/, then `cargo xtask deploy rpi-zero-01` (or write its card with `cargo xtask sd rpi-zero-01`)"
        )),
        "{out}"
    );
    assert!(f.run(&["wifi", "rpi-zero-01"], PASSWORD).status.success());
    assert!(!f.check().contains("Wi-Fi"));

    // The Pi gets a new identity: its secret no longer opens for it.
    std::fs::remove_file(root.join("hosts/rpi-zero-01/ssh_host_ed25519_key.pub")).unwrap();
    std::fs::remove_file(f.host_key("rpi-zero-01")).unwrap();
    assert!(f.run(&["identity", "rpi-zero-01"], "").status.success());
    let out = f.check();
    assert!(
        out.contains(&format!(
            "hosts/fleet.toml:{wl}: host `rpi-zero-01` cannot read its Wi-Fi password: secrets/wifi-rpi-zero-01.age is missing, unusable or not encrypted to its key (hosts/rpi-zero-01/ssh_host_ed25519_key.pub)\n    fix: `cargo xtask secret rekey` when the file is whole"
        )),
        "{out}"
    );
    assert!(f.run(&["secret", "rekey"], "").status.success());
    assert!(!f.check().contains("Wi-Fi"));
    assert_eq!(
        age_decrypt(&f.host_key("rpi-zero-01"), &root.join(SECRET)),
        Ok(format!("psk={PASSWORD}\n"))
    );

    // Owner and mode that shut wpa_supplicant out; another host as reader.
    let toml_path = root.join("secrets/secrets.toml");
    let toml = std::fs::read_to_string(&toml_path).unwrap();
    std::fs::write(
        &toml_path,
        toml.replace("mode = \"0440\"", "mode = \"0400\""),
    )
    .unwrap();
    let line = toml
        .lines()
        .position(|l| l.contains("wifi-rpi-zero-01"))
        .unwrap()
        + 1;
    let out = f.check();
    assert!(
        out.contains(&format!(
            "secrets/secrets.toml:{line}: secret `wifi-rpi-zero-01` is root:wpa_supplicant 0400 on the Pi, which wpa_supplicant (user and group wpa_supplicant) cannot read\n    fix: `cargo xtask wifi rpi-zero-01` writes it as root:wpa_supplicant 0440"
        )),
        "{out}"
    );
    std::fs::write(
        &toml_path,
        toml.replace("hosts = [\"rpi-zero-01\"]", "hosts = [\"rpi-box-01\"]"),
    )
    .unwrap();
    let out = f.check();
    assert!(
        out.contains(&format!(
            "hosts/fleet.toml:{wl}: host `rpi-zero-01` joins the Wi-Fi `home-wifi` but does not read the secret `wifi-rpi-zero-01` (secrets/secrets.toml gives it to other hosts)"
        )),
        "{out}"
    );
}

/// On a terminal the password is asked twice, without echo.
#[test]
fn asks_twice_on_a_terminal() {
    let Some(f) = Fixture::new() else { return };
    if !prerequisite(need_program("script", "bsdutils")) {
        return;
    }
    let bin = assert_cmd::cargo::cargo_bin("xtask");
    let dir = tempfile::tempdir().unwrap();
    let typescript = dir.path().join("typescript");
    let done = dir.path().join("done");
    let q = |p: &Path| format!("'{}'", p.display());
    let command = format!(
        "{} --flake {} wifi rpi-zero-01; touch {}",
        q(&bin),
        q(f.root()),
        q(&done)
    );
    // Each answer is typed once its prompt shows in the typescript.
    let typed = format!(
        "(until grep -qs 'Wi-Fi password for' {ts}; do sleep 0.1; done; sleep 0.3; \
         printf '%s\\n' '{PASSWORD}'; \
         until grep -qs 'again, to be sure' {ts}; do sleep 0.1; done; sleep 0.3; \
         printf '%s\\n' '{PASSWORD}'; \
         while [ ! -e {done} ]; do sleep 0.1; done) | timeout 120 script -qefc \"$0\" {ts}",
        ts = q(&typescript),
        done = q(&done),
    );
    let out = Command::new("sh")
        .args(["-c", &typed, &command])
        .env("XDG_DATA_HOME", f.data.path())
        .env("HOME", f.home.path())
        .output()
        .unwrap();
    let stdout = text(&out.stdout);
    assert!(
        stdout.contains("Wi-Fi password for `home-wifi` (rpi-zero-01): "),
        "{stdout}\n{}",
        text(&out.stderr)
    );
    assert!(stdout.contains("again, to be sure: "), "{stdout}");
    assert!(
        !stdout.contains(PASSWORD),
        "the password was echoed:\n{stdout}"
    );
    assert_eq!(
        age_decrypt(&f.host_key("rpi-zero-01"), &f.root().join(SECRET)),
        Ok(format!("psk={PASSWORD}\n"))
    );
}

/// The Nix side, evaluated by real Nix with the few nixpkgs `lib` functions
/// the modules use written from builtins: what `wifi` wrote reaches
/// lib/inventory.nix, modules/secrets.nix makes it agenix's secret
/// root:wpa_supplicant 0440, and modules/wifi.nix points wpa_supplicant's
/// secrets file at agenix's path, restarts wpa_supplicant when the
/// ciphertext changes and orders it after agenix's unit; without the secret
/// an assertion says what to run.
#[test]
fn nix_modules_give_wpa_supplicant_the_agenix_secret() {
    if !prerequisite(common::need_nix()) {
        return;
    }
    let Some(f) = Fixture::new() else { return };
    let root = f.root();
    let no_secret = eval(root, "[ ]");
    assert_eq!(no_secret["secretsFile"], serde_json::Value::Null);
    assert_eq!(
        no_secret["failed"],
        serde_json::json!([
            "host `rpi-zero-01` joins the Wi-Fi `home-wifi`, but no secret `wifi-rpi-zero-01` that it reads holds the password: run `cargo xtask wifi rpi-zero-01`, commit secrets/, then deploy it (or write its card with `cargo xtask sd rpi-zero-01`)"
        ])
    );

    assert!(f.run(&["wifi", "rpi-zero-01"], PASSWORD).status.success());
    let v = eval(root, "[ ]");
    assert_eq!(v["failed"], serde_json::json!([]));
    let age_file = root.join(SECRET).display().to_string();
    assert_eq!(
        v["ageSecrets"],
        serde_json::json!({"wifi-rpi-zero-01": {
            "file": age_file, "owner": "root", "group": "wpa_supplicant", "mode": "0440",
            "path": "/run/agenix/wifi-rpi-zero-01"
        }})
    );
    assert_eq!(v["secretsFile"], "/run/agenix/wifi-rpi-zero-01");
    assert_eq!(v["pskRaw"], serde_json::json!({"home-wifi": "ext:psk"}));
    assert_eq!(
        v["units"],
        serde_json::json!({"wpa_supplicant": {
            "restartTriggers": [age_file], "after": ["agenix-install-secrets.service"]
        }})
    );
    // One unit per listed interface: each is restarted.
    let v = eval(root, "[ \"wlan0\" ]");
    assert_eq!(
        v["units"]["wpa_supplicant-wlan0"]["restartTriggers"],
        serde_json::json!([age_file])
    );
}

const STUB: &str = r#"
let
  root = ROOT;
  lib = {
    mkIf = c: v: if c then v else null;
    mkDefault = v: v;
    optional = c: v: if c then [ v ] else [ ];
    genAttrs = names: f: builtins.listToAttrs (map (n: { name = n; value = f n; }) names);
    mapAttrs = builtins.mapAttrs;
    concatStringsSep = builtins.concatStringsSep;
    filterAttrs = pred: set: builtins.listToAttrs (builtins.concatMap (n: if pred n set.${n} then [ { name = n; value = set.${n}; } ] else [ ]) (builtins.attrNames set));
  };
  pkgs.writeText = name: text: "/nix/store/00000000000000000000000000000000-${name}";
  inventory = import (root + "/lib/inventory.nix") { inherit root; };
  host = inventory.hosts.rpi-zero-01;
  secrets = import (root + "/modules/secrets.nix") { inherit lib inventory host; };
  # agenix's defaults: path = "${age.secretsDir}/<name>", secretsDir = "/run/agenix".
  config = {
    age.secrets = builtins.mapAttrs (n: s: s // { path = "/run/agenix/${n}"; }) secrets.age.secrets;
    networking.wireless.interfaces = INTERFACES;
    # The lean profile's defaults (modules/hardware/sd-card.nix, lean.nix).
    pi-nixos.wifiFirmware = true;
    hardware.enableRedistributableFirmware = false;
  };
  wifi = (import (root + "/modules/wifi.nix") { inherit config lib pkgs inventory host; }).config;
in
{
  secretsFile = wifi.networking.wireless.secretsFile;
  pskRaw = builtins.mapAttrs (_: n: n.pskRaw) wifi.networking.wireless.networks;
  ageSecrets = builtins.mapAttrs (_: s: s // { file = toString s.file; }) config.age.secrets;
  units =
    if wifi.systemd.services == null then null
    else builtins.mapAttrs (_: u: { restartTriggers = map toString u.restartTriggers; inherit (u) after; }) wifi.systemd.services;
  failed = map (a: a.message) (builtins.filter (a: !a.assertion) (wifi.assertions ++ secrets.assertions));
}
"#;

fn eval(root: &Path, interfaces: &str) -> serde_json::Value {
    let expr = STUB
        .replace("ROOT", &root.display().to_string())
        .replace("INTERFACES", interfaces);
    let out = common::command("nix")
        .args([
            "--extra-experimental-features",
            "nix-command",
            "eval",
            "--json",
            "--impure",
            "--expr",
            &expr,
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// `new-host` checks its tools and makes the identity before it writes the
/// inventory: without ssh-keygen, or when the identity cannot be made, the
/// fleet is left as it was; a Wi-Fi host's next step is `wifi`.
#[test]
fn new_host_makes_the_identity_before_the_inventory() {
    let Some(f) = Fixture::new() else { return };
    let root = f.root();
    let inventory = root.join("hosts/fleet.toml");
    let before = std::fs::read_to_string(&inventory).unwrap();
    let args = [
        "new-host",
        "rpi-zero-02",
        "--model",
        "zero2w",
        "--wifi",
        "home-wifi",
    ];
    let unchanged = |out: &std::process::Output, message: &str| {
        assert!(!out.status.success());
        assert!(text(&out.stderr).contains(message), "{}", text(&out.stderr));
        assert_eq!(std::fs::read_to_string(&inventory).unwrap(), before);
        assert!(!root.join("hosts/rpi-zero-02").exists());
    };
    // No ssh-keygen on PATH.
    let empty = tempfile::tempdir().unwrap();
    let out = assert_cmd::Command::cargo_bin("xtask")
        .unwrap()
        .arg("--flake")
        .arg(root)
        .args(args)
        .env("PATH", empty.path())
        .env("XDG_DATA_HOME", f.data.path())
        .output()
        .unwrap();
    unchanged(
        &out,
        "ssh-keygen is not installed (it makes the host's identity): `sudo apt-get install openssh-client`, then run this again; nothing was changed",
    );
    // The identity cannot be made (its data folder is a file).
    let blocked = empty.path().join("not-a-folder");
    std::fs::write(&blocked, "").unwrap();
    let out = assert_cmd::Command::cargo_bin("xtask")
        .unwrap()
        .arg("--flake")
        .arg(root)
        .args(args)
        .env("XDG_DATA_HOME", &blocked)
        .output()
        .unwrap();
    unchanged(&out, "error: ");

    let out = f.run(&args, "");
    assert!(out.status.success());
    let stdout = text(&out.stdout);
    let next = stdout.split("next:\n").nth(1).unwrap_or_default();
    assert!(
        next.starts_with("  cargo xtask wifi rpi-zero-02   # its Wi-Fi password"),
        "{stdout}"
    );
    assert!(next.contains(" hosts/rpi-zero-02 secrets/   # flakes do not see untracked files"));
    assert!(
        root.join("hosts/rpi-zero-02/ssh_host_ed25519_key.pub")
            .exists()
    );
    assert!(f.host_key("rpi-zero-02").exists());
    assert!(
        std::fs::read_to_string(&inventory)
            .unwrap()
            .contains("name = \"rpi-zero-02\"")
    );
    // Then its password, and `check` has nothing to say about it.
    assert!(f.run(&["wifi", "rpi-zero-02"], PASSWORD).status.success());
    let check = f.check();
    assert!(
        !check
            .lines()
            .any(|l| l.contains("rpi-zero-02") && !l.starts_with("info: ")),
        "{check}"
    );
}

/// What the Pi does with the secret, on real systemd (a fake Pi: Debian
/// 13's systemd in systemd-nspawn): a service confined like nixpkgs'
/// wpa_supplicant unit (its own user and group, its runtime folder as its
/// root directory, the secrets file bind-mounted read-only) reads the file
/// through agenix's link `/run/agenix/<name>` → `/run/agenix.d/<generation>/`
/// as agenix lays it out (root:wpa_supplicant 0440); without the group's
/// read bit it cannot; a new generation (what a deploy's activation makes)
/// reaches the running service only when it is restarted, which is why
/// modules/wifi.nix makes the secret a restart trigger; and without the
/// file the service does not start at all.
#[test]
fn systemd_gives_the_confined_service_the_current_generation() {
    if !prerequisite(common::fakepi::missing()) {
        return;
    }
    let base = match common::fakepi::base(&common::cache()) {
        Ok(b) => b,
        Err(e) => {
            prerequisite(Some(format!("cannot make the fake Pi root: {e}")));
            return;
        }
    };
    let mut f = common::fakepi::Fleet::new(&base, &["pi"]);
    f.boot_all();
    // The unit: nixpkgs' wpa_supplicant serviceConfig, what touches files
    // (Debian keeps its programs in /usr where NixOS has /nix/store).
    let unit = "[Service]\n\
        User=wpa_supplicant\nGroup=wpa_supplicant\n\
        RuntimeDirectory=wpa_supplicant\n\
        RootDirectory=/run/wpa_supplicant\nRootDirectoryStartOnly=true\n\
        BindPaths=/run/wpa_supplicant\n\
        BindReadOnlyPaths=/usr /bin /lib -/lib64 /etc/ /run/agenix/wifi-pi\n\
        ProtectSystem=strict\nProtectHome=true\nPrivateTmp=true\nPrivateDevices=true\n\
        NoNewPrivileges=true\nUMask=0077\n\
        ExecStart=/bin/sh -c 'while :; do cat /run/agenix/wifi-pi > /run/wpa_supplicant/seen.new 2>&1; mv /run/wpa_supplicant/seen.new /run/wpa_supplicant/seen; sleep 0.1; done'\n";
    let generation = |n: u32, value: &str| {
        // agenix's steps: a new generation folder, the file 0440 then
        // chowned, the link switched, the old generation removed.
        format!(
            "set -e; mkdir -p /run/agenix.d/{n}; chmod 0751 /run/agenix.d /run/agenix.d/{n}; \
             printf '%s\\n' '{value}' > /run/agenix.d/{n}/wifi-pi; chmod 0440 /run/agenix.d/{n}/wifi-pi; \
             chown root:wpa_supplicant /run/agenix.d/{n}/wifi-pi; ln -sfT /run/agenix.d/{n} /run/agenix; \
             rm -rf /run/agenix.d/{}",
            n - 1
        )
    };
    let seen = |f: &common::fakepi::Fleet, want: &str| {
        let script = format!(
            "for i in $(seq 100); do [ \"$(cat /run/wpa_supplicant/seen 2>/dev/null)\" = '{want}' ] && exit 0; sleep 0.1; done; cat /run/wpa_supplicant/seen; exit 1"
        );
        f.ssh_try("pi", &script)
            .unwrap_or_else(|e| panic!("the service did not read `{want}`: {e}"));
    };
    f.ssh(
        "pi",
        &format!(
            "set -e; useradd --system --no-create-home wpa_supplicant; \
             printf '%s' \"{unit}\" > /etc/systemd/system/wpa-like.service; systemctl daemon-reload; {}",
            generation(1, "psk=first password")
        ),
    );
    f.ssh("pi", "systemctl start wpa-like");
    seen(&f, "psk=first password");

    // A deploy's activation makes generation 2 and removes 1: the running
    // service still reads what was mounted when it started.
    f.ssh("pi", &generation(2, "psk=second password"));
    std::thread::sleep(std::time::Duration::from_millis(500));
    seen(&f, "psk=first password");
    f.ssh("pi", "systemctl restart wpa-like");
    seen(&f, "psk=second password");

    // Without the group's read bit, wpa_supplicant's user cannot read it.
    f.ssh(
        "pi",
        "chmod 0400 /run/agenix/wifi-pi && systemctl restart wpa-like",
    );
    seen(&f, "cat: /run/agenix/wifi-pi: Permission denied");

    // Without the file (no secret decrypted) the service does not start.
    let out = f.ssh(
        "pi",
        "rm /run/agenix/wifi-pi; systemctl restart wpa-like; sleep 0.5; systemctl is-active wpa-like || true",
    );
    assert!(out.ends_with("failed"), "{out}");
}
