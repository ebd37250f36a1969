//! `cargo xtask check` on Compose projects (`hosts/<host>/compose/<project>/`):
//! every refusal with file:line, warnings that do not fail it.

mod common;

const D: &str = "sha256:200689790a0a0ea48ca45992e0450bc26ccab5307375b41c84dfc4f2475937ab";

fn check(fleet: &std::path::Path) -> (bool, String) {
    let out = common::xtask(fleet).arg("check").output().unwrap();
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn every_compose_refusal_has_file_and_line() {
    let fleet = common::fixture_fleet();
    let dir = fleet.path().join("hosts/rpi-box-01/compose/app");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join(".env"), "TAG=1.27\n").unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        format!(
            "services:\n  web:\n    image: nginx:${{TAG}}\n    ports:\n      - \"8080:80\"\n  builder:\n    build: .\n  db:\n    image: postgres:17@{D}\n    environment:\n      POSTGRES_PASSWORD: ${{DB_PASSWORD}}\n    privileged: true\n  mdns:\n    image: avahi@{D}\n    network_mode: host\nvolumes:\n  data:\nservice:\n  typo: 1\n"
        ),
    )
    .unwrap();
    let (ok, out) = check(fleet.path());
    assert!(!ok, "{out}");
    let f = "hosts/rpi-box-01/compose/app/compose.yaml";
    for expected in [
        format!("{f}:3: service `web`: image `nginx:1.27` is not pinned by digest"),
        format!(
            "{f}:5: service `web` of project `app`: host port 8080/tcp is already published by container `whoami` (hosts/rpi-box-01/containers.toml:10)"
        ),
        format!("{f}:7: service `builder` has `build:`: a Pi does not build images"),
        format!("{f}:11: `DB_PASSWORD` is not set: Compose would substitute an empty string"),
        format!("{f}:18: unknown top-level key `service`"),
        format!("warning: {f}:12: service `db` is privileged"),
        format!("warning: {f}:15: service `mdns` uses the host's network"),
    ] {
        assert!(out.contains(&expected), "missing `{expected}` in:\n{out}");
    }
}

#[test]
fn a_pinned_project_passes_with_its_warnings() {
    let fleet = common::fixture_fleet();
    let dir = fleet.path().join("hosts/rpi-box-03/compose/web");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        format!("x-common: &common\n  restart: unless-stopped\nservices:\n  web:\n    <<: *common\n    image: nginx:1.27@{D}\n    ports: [\"8081:80\"]\n    privileged: true\n"),
    )
    .unwrap();
    let (_, out) = check(fleet.path());
    assert!(
        !out.contains("compose.yaml:")
            || out.contains("warning: hosts/rpi-box-03/compose/web/compose.yaml:8"),
        "{out}"
    );
    assert!(
        !out.lines()
            .any(|l| l.starts_with("hosts/rpi-box-03/compose")),
        "{out}"
    );
}

#[test]
fn a_project_folder_without_compose_yaml() {
    let fleet = common::fixture_fleet();
    let dir = fleet.path().join("hosts/rpi-box-03/compose/Old");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("docker-compose.yml"), "services: {}\n").unwrap();
    let (ok, out) = check(fleet.path());
    assert!(!ok);
    assert!(
        out.contains("hosts/rpi-box-03/compose/Old: `Old` is not a valid Compose project name"),
        "{out}"
    );
    assert!(
        out.contains("rename docker-compose.yml to compose.yaml"),
        "{out}"
    );
}

#[test]
fn files_a_project_reads_exist_or_are_secrets_the_fleet_declares() {
    let fleet = common::fixture_fleet();
    let dir = fleet.path().join("hosts/rpi-box-03/compose/db");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("init.sql"), "select 1;\n").unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        format!("services:\n  db:\n    image: postgres:17@{D}\n    env_file: /run/agenix/db-env\n    volumes:\n      - ./init.sql:/docker-entrypoint-initdb.d/init.sql:ro\nconfigs:\n  extra:\n    file: ./missing.conf\n  init:\n    file: ./init.sql\n"),
    )
    .unwrap();
    let (ok, out) = check(fleet.path());
    assert!(!ok, "{out}");
    let f = "hosts/rpi-box-03/compose/db/compose.yaml";
    assert!(
        out.contains(&format!(
            "{f}:4: `/run/agenix/db-env` is the secret `db-env`, but the fleet declares no secrets"
        )),
        "{out}"
    );
    assert!(
        out.contains(&format!(
            "{f}:9: `./missing.conf` is not in the project folder"
        )),
        "{out}"
    );
    assert!(!out.contains("init.sql` is not"), "{out}");
}

#[test]
fn a_secret_a_project_names_must_be_one_its_host_reads() {
    let fleet = common::fixture_fleet();
    std::fs::create_dir_all(fleet.path().join("secrets")).unwrap();
    std::fs::write(
        fleet.path().join("secrets/secrets.toml"),
        "[db-env]\nhosts = [\"rpi-box-03\"]\n",
    )
    .unwrap();
    let dir = fleet.path().join("hosts/rpi-box-01/compose/db");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("compose.yaml"),
        format!("services:\n  db:\n    image: postgres:17@{D}\n    env_file: /run/agenix/db-env\n  cache:\n    image: redis:7@{D}\n    env_file: /run/agenix/no-such\n"),
    )
    .unwrap();
    let (ok, out) = check(fleet.path());
    assert!(!ok, "{out}");
    let f = "hosts/rpi-box-01/compose/db/compose.yaml";
    for expected in [
        format!(
            "{f}:4: `/run/agenix/db-env` is the secret `db-env`, but host rpi-box-01 does not read it (it is for: rpi-box-03)"
        ),
        format!(
            "{f}:7: `/run/agenix/no-such` is the secret `no-such`, which secrets/secrets.toml does not declare"
        ),
    ] {
        assert!(out.contains(&expected), "missing `{expected}` in:\n{out}");
    }
}
