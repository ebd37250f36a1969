//! A pinned Compose project on a real engine: Debian's dockerd started by
//! the test (state in a temp dir), Compose v2 from Debian 13, the image
//! pulled by digest from a local registry (Debian's docker-registry). It
//! comes up with `--wait` as modules/compose.nix runs it, the deploy probe's
//! Compose line reads it healthy, and `down` removes it.

mod common;

use std::process::Command;

use common::docker::{Dockerd, compose_binary, need_dockerd};
use common::registry::{Layout, Registry, need_tools, tar_with};

const PROBE: &str = include_str!("../src/deploy/compose-probe.sh");

fn ok(cmd: &mut Command) -> String {
    eprintln!("$ {cmd:?}");
    let out = cmd.output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{cmd:?} failed: {text}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn pinned_project_comes_up_healthy_and_down_removes_it() {
    if !common::prerequisite(
        need_tools()
            .or_else(need_dockerd)
            .or_else(|| common::need_program("busybox", "busybox-static")),
    ) {
        return;
    }
    let compose = match compose_binary(&common::cache()) {
        Ok(b) => b,
        Err(e) => {
            common::prerequisite(Some(format!("Compose v2 from Debian 13: {e}")));
            return;
        }
    };
    let reg = Registry::start();
    let engine = Dockerd::start();

    // An image that runs here and on a Pi: busybox (static), in an index.
    let work = tempfile::tempdir().unwrap();
    let busybox = std::fs::read("/usr/bin/busybox").unwrap();
    let l = Layout::new(&work.path().join("tiny"));
    let layer = tar_with("bin/busybox", &busybox, 0o755);
    let amd = l.image("amd64", &layer, serde_json::json!({}));
    let arm = l.image("arm64", &layer, serde_json::json!({}));
    let index = l.index(&[(&amd, "amd64"), (&arm, "arm64")]);
    l.tag(&index, "1");
    reg.push(&l.dir, "tiny", "1");

    // The project, pinned by `cargo xtask pin` as a user does.
    let fleet = common::fixture_fleet();
    std::fs::remove_file(fleet.path().join("hosts/rpi-box-01/containers.toml")).unwrap();
    let project = fleet.path().join("hosts/rpi-box-03/compose/tiny");
    std::fs::create_dir_all(&project).unwrap();
    let file = project.join("compose.yaml");
    std::fs::write(
        &file,
        format!(
            "services:\n  app:\n    image: {}/tiny:1\n    command: [\"/bin/busybox\", \"sleep\", \"3600\"]\n    network_mode: none\n    healthcheck:\n      test: [\"CMD\", \"/bin/busybox\", \"true\"]\n      interval: 1s\n      start_period: 1s\n",
            reg.host
        ),
    )
    .unwrap();
    let out = common::xtask(fleet.path()).arg("pin").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let digest = reg.raw_digest("tiny", "1");
    assert!(
        std::fs::read_to_string(&file)
            .unwrap()
            .contains(&format!("tiny:1@{digest}"))
    );

    // As modules/compose.nix runs it.
    let dir = project.display().to_string();
    let args = [
        "--project-name",
        "tiny",
        "--project-directory",
        &dir,
        "--file",
        &format!("{dir}/compose.yaml"),
    ];
    ok(Command::new(&compose)
        .env("DOCKER_HOST", engine.host())
        .args(args)
        .args(["up", "--detach", "--wait", "--remove-orphans"]));

    // Pulled by digest, running the pinned image.
    let image = ok(engine.docker().args([
        "inspect",
        "--format",
        "{{.Config.Image}} {{.State.Health.Status}}",
        "tiny-app-1",
    ]));
    assert_eq!(
        image.trim(),
        format!("{}/tiny:1@{digest} healthy", reg.host)
    );

    // Read the way the deploy health check reads it.
    let seen = ok(Command::new("sh")
        .arg("-c")
        .arg(PROBE)
        .env("DOCKER_HOST", engine.host())
        .env("PATH", "/usr/bin:/bin"));
    assert_eq!(seen.trim(), "running=tiny/app");

    ok(Command::new(&compose)
        .env("DOCKER_HOST", engine.host())
        .args(args)
        .args(["down", "--remove-orphans"]));
    let left = ok(engine.docker().args([
        "ps",
        "-aq",
        "--filter",
        "label=com.docker.compose.project=tiny",
    ]));
    assert_eq!(left.trim(), "", "containers left after down");
    let seen = ok(Command::new("sh")
        .arg("-c")
        .arg(PROBE)
        .env("DOCKER_HOST", engine.host())
        .env("PATH", "/usr/bin:/bin"));
    assert_eq!(seen.trim(), "");
}
