//! modules/compose.nix evaluated by real Nix (the tests' private store) with
//! the few nixpkgs `lib` functions it uses written from builtins: one
//! `compose-<project>` unit per project folder, running nixpkgs'
//! docker-compose on the project's own store copy, re-applied when a file of
//! that project changes and only then.

mod common;

use std::path::Path;

const STUB: &str = r#"
let
  lib = {
    attrNames = builtins.attrNames;
    filter = builtins.filter;
    listToAttrs = builtins.listToAttrs;
    nameValuePair = name: value: { inherit name value; };
    filterAttrs = pred: set: builtins.listToAttrs (builtins.concatMap (n: if pred n set.${n} then [ { name = n; value = set.${n}; } ] else [ ]) (builtins.attrNames set));
    mkDefault = v: v;
    mkIf = condition: content: { inherit condition content; };
  };
  pkgs.docker-compose = "/nix/store/00000000000000000000000000000000-docker-compose";
  m = import MODULE { inherit lib pkgs; host = { name = "pi"; }; };
in
{
  units = builtins.mapAttrs (n: u: u // { restartTriggers = map toString u.restartTriggers; serviceConfig = u.serviceConfig // { WorkingDirectory = toString u.serviceConfig.WorkingDirectory; }; }) m.systemd.services;
  failed = map (a: a.message) (builtins.filter (a: !a.assertion) m.assertions);
  docker = m.virtualisation.docker.enable;
}
"#;

fn eval(repo: &Path) -> serde_json::Value {
    let expr = STUB.replace(
        "MODULE",
        &repo.join("modules/compose.nix").display().to_string(),
    );
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

#[test]
fn one_unit_per_project_restarted_when_its_files_change() {
    if !common::prerequisite(common::need_nix()) {
        return;
    }
    let repo = tempfile::tempdir().unwrap();
    common::copy(
        &common::repo_root().join("modules"),
        &repo.path().join("modules"),
    );
    let web = repo.path().join("hosts/pi/compose/web");
    let db = repo.path().join("hosts/pi/compose/db");
    for d in [&web, &db] {
        std::fs::create_dir_all(d).unwrap();
        std::fs::write(d.join("compose.yaml"), "services: {}\n").unwrap();
    }
    std::fs::write(web.join("nginx.conf"), "a\n").unwrap();
    let v = eval(repo.path());
    assert_eq!(v["failed"], serde_json::json!([]));
    // Compose projects need Docker: the host asks for it.
    assert_eq!(
        v["docker"],
        serde_json::json!({ "condition": true, "content": true })
    );
    let unit = &v["units"]["compose-web"];
    let src = unit["serviceConfig"]["WorkingDirectory"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        src.starts_with("/nix/store/") && src.ends_with("-compose-web"),
        "{src}"
    );
    let start = unit["serviceConfig"]["ExecStart"].as_str().unwrap();
    assert_eq!(
        start,
        format!(
            "/nix/store/00000000000000000000000000000000-docker-compose/bin/docker-compose --project-name web --project-directory {src} --file {src}/compose.yaml up --detach --wait --remove-orphans"
        )
    );
    assert!(
        unit["serviceConfig"]["ExecStop"]
            .as_str()
            .unwrap()
            .ends_with(" down --remove-orphans")
    );
    assert_eq!(
        unit["after"],
        serde_json::json!(["docker.service", "network-online.target"])
    );
    assert_eq!(unit["requires"], serde_json::json!(["docker.service"]));
    assert_eq!(unit["wantedBy"], serde_json::json!(["multi-user.target"]));
    assert_eq!(unit["restartTriggers"], serde_json::json!([src.clone()]));
    let db_src = v["units"]["compose-db"]["serviceConfig"]["WorkingDirectory"].clone();

    // A config file of `web` changes: web's store copy changes, db's does not.
    std::fs::write(web.join("nginx.conf"), "b\n").unwrap();
    let v2 = eval(repo.path());
    assert_ne!(
        v2["units"]["compose-web"]["serviceConfig"]["WorkingDirectory"]
            .as_str()
            .unwrap(),
        src
    );
    assert_eq!(
        v2["units"]["compose-db"]["serviceConfig"]["WorkingDirectory"],
        db_src
    );
}

#[test]
fn a_bad_project_folder_is_an_assertion_with_the_fix() {
    if !common::prerequisite(common::need_nix()) {
        return;
    }
    let repo = tempfile::tempdir().unwrap();
    common::copy(
        &common::repo_root().join("modules"),
        &repo.path().join("modules"),
    );
    std::fs::create_dir_all(repo.path().join("hosts/pi/compose/Web")).unwrap();
    std::fs::create_dir_all(repo.path().join("hosts/pi/compose/app")).unwrap();
    let v = eval(repo.path());
    let failed = v["failed"].to_string();
    assert!(
        failed.contains("`Web` is not a valid Compose project name: rename the folder"),
        "{failed}"
    );
    assert!(
        failed.contains("hosts/pi/compose/app has no compose.yaml"),
        "{failed}"
    );
    assert!(v["units"].get("compose-Web").is_none());
}

#[test]
fn a_host_without_projects_does_not_ask_for_docker() {
    if !common::prerequisite(common::need_nix()) {
        return;
    }
    let repo = tempfile::tempdir().unwrap();
    common::copy(
        &common::repo_root().join("modules"),
        &repo.path().join("modules"),
    );
    // No compose folder at all, then an empty one: no unit, no Docker.
    let v = eval(repo.path());
    assert_eq!(v["units"], serde_json::json!({}));
    assert_eq!(v["docker"]["condition"], false);
    std::fs::create_dir_all(repo.path().join("hosts/pi/compose")).unwrap();
    let v = eval(repo.path());
    assert_eq!(v["docker"]["condition"], false);
}
