//! `cargo xtask pin` against a real registry (Debian's docker-registry on a
//! loopback port), images pushed by skopeo from OCI layouts written here.

mod common;

use std::path::Path;

use common::registry::{Layout, Registry, need_tools, tar_with};

/// Pushes `repo:tag`: an index of amd64 + arm64 images; `generation`
/// changes the images' content (a re-push).
fn push_multi(reg: &Registry, work: &Path, repo: &str, tag: &str, generation: u32) {
    let l = Layout::new(&work.join(format!("{repo}-{generation}")));
    let extra = serde_json::json!({ "created": format!("2026-01-0{}T00:00:00Z", generation + 1) });
    let amd = l.image(
        "amd64",
        &tar_with("hello", b"amd64\n", 0o644),
        extra.clone(),
    );
    let arm = l.image("arm64", &tar_with("hello", b"arm64\n", 0o644), extra);
    let index = l.index(&[(&amd, "amd64"), (&arm, "arm64")]);
    l.tag(&index, tag);
    reg.push(&l.dir, repo, tag);
}

fn push_single(reg: &Registry, work: &Path, repo: &str, tag: &str, arch: &str) {
    let l = Layout::new(&work.join(repo));
    let m = l.image(
        arch,
        &tar_with("hello", arch.as_bytes(), 0o644),
        serde_json::json!({}),
    );
    l.tag(&m, tag);
    reg.push(&l.dir, repo, tag);
}

fn stdout(out: &std::process::Output) -> String {
    format!(
        "{}\n--- stderr ---\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn pin_writes_index_digests_refuses_amd64_only_and_updates() {
    if !common::prerequisite(need_tools()) {
        return;
    }
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    push_multi(&reg, work.path(), "team/multi", "1.0", 0);
    push_single(&reg, work.path(), "arm", "2", "arm64");
    push_single(&reg, work.path(), "amd", "3", "amd64");
    let h = &reg.host;

    let fleet = common::fixture_fleet();
    // The shipped example pulls from Docker Hub: tests reach loopback only.
    std::fs::remove_file(fleet.path().join("hosts/rpi-box-01/containers.toml")).unwrap();
    let project = fleet.path().join("hosts/rpi-box-03/compose/web");
    std::fs::create_dir_all(&project).unwrap();
    let compose = project.join("compose.yaml");
    let compose_text = format!(
        "# the web app, from its README\nservices:\n  web:\n    image: {h}/team/multi:1.0   # keep this comment\n    ports:\n      - \"8081:80\"\n  side:\n    image: \"{h}/arm:2\"\n"
    );
    std::fs::write(&compose, &compose_text).unwrap();
    let toml = fleet.path().join("hosts/rpi-box-03/containers.toml");
    let toml_text = format!(
        "# one-line containers\n[[container]]\nname = \"tool\"\nimage = \"{h}/team/multi:1.0\" # same image\n"
    );
    std::fs::write(&toml, &toml_text).unwrap();

    // --check: unpinned images fail it, and it writes nothing.
    let out = common::xtask(fleet.path())
        .args(["pin", "--check"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("hosts/rpi-box-03/compose/web/compose.yaml:4: service `web`"),
        "{}",
        stdout(&out)
    );
    assert_eq!(std::fs::read_to_string(&compose).unwrap(), compose_text);

    // pin: the index digest, exactly the raw bytes' sha256; comments kept.
    let out = common::xtask(fleet.path()).arg("pin").output().unwrap();
    assert!(out.status.success(), "{}", stdout(&out));
    let multi = reg.raw_digest("team/multi", "1.0");
    let arm = reg.raw_digest("arm", "2");
    assert_eq!(
        std::fs::read_to_string(&compose).unwrap(),
        compose_text
            .replace("multi:1.0 ", &format!("multi:1.0@{multi} "))
            .replace("arm:2\"", &format!("arm:2@{arm}\""))
    );
    assert_eq!(
        std::fs::read_to_string(&toml).unwrap(),
        toml_text.replace("multi:1.0\"", &format!("multi:1.0@{multi}\""))
    );
    let out = common::xtask(fleet.path())
        .args(["pin", "--check"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stdout(&out));
    let out = common::xtask(fleet.path())
        .args(["pin", "--check", "--update"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stdout(&out));

    // An amd64-only image is refused, naming its platform; nothing is written.
    let pinned_text = std::fs::read_to_string(&compose).unwrap();
    let with_amd = format!("{pinned_text}  amd:\n    image: {h}/amd:3\n");
    std::fs::write(&compose, &with_amd).unwrap();
    let out = common::xtask(fleet.path())
        .arg("pin")
        .arg(&compose)
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains("has no linux/arm64 image (it has linux/amd64)"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("compose.yaml:10: service `amd`"),
        "{}",
        stdout(&out)
    );
    assert_eq!(std::fs::read_to_string(&compose).unwrap(), with_amd);
    std::fs::write(&compose, &pinned_text).unwrap();

    // A re-pushed tag: --check --update sees it, --update writes old → new.
    push_multi(&reg, work.path(), "team/multi", "1.0", 1);
    let multi2 = reg.raw_digest("team/multi", "1.0");
    assert_ne!(multi, multi2);
    let out = common::xtask(fleet.path())
        .args(["pin", "--check"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "without --update, pinned images are not re-resolved: {}",
        stdout(&out)
    );
    let out = common::xtask(fleet.path())
        .args(["pin", "--check", "--update"])
        .output()
        .unwrap();
    assert!(!out.status.success(), "{}", stdout(&out));
    assert_eq!(std::fs::read_to_string(&compose).unwrap(), pinned_text);
    let out = common::xtask(fleet.path())
        .args(["pin", "--update"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stdout(&out));
    assert!(
        stdout(&out).contains(&format!("{multi} → {multi2}")),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        std::fs::read_to_string(&compose).unwrap(),
        pinned_text.replace(&multi, &multi2)
    );
    assert!(std::fs::read_to_string(&toml).unwrap().contains(&multi2));

    // check agrees: pinned images, no problem left about them.
    let out = common::xtask(fleet.path()).arg("check").output().unwrap();
    assert!(!stdout(&out).contains("not pinned"), "{}", stdout(&out));
}

#[test]
fn pin_explains_an_unknown_tag_and_an_unreachable_registry() {
    if !common::prerequisite(need_tools()) {
        return;
    }
    let reg = Registry::start();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("compose.yaml");
    let text = format!("services:\n  a:\n    image: {}/nothing:1\n", reg.host);
    std::fs::write(&file, &text).unwrap();
    let fleet = common::fixture_fleet();
    let out = common::xtask(fleet.path())
        .arg("pin")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("has no nothing:1 (HTTP 404)"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains("nothing was written"),
        "{}",
        stdout(&out)
    );
    assert_eq!(std::fs::read_to_string(&file).unwrap(), text);
    drop(reg);
    // Port 9 (discard) on loopback: nothing listens.
    std::fs::write(&file, "services:\n  a:\n    image: 127.0.0.1:9/x:1\n").unwrap();
    let out = common::xtask(fleet.path())
        .arg("pin")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stdout(&out).contains("cannot reach http://127.0.0.1:9/v2/x/manifests/1"),
        "{}",
        stdout(&out)
    );
}
