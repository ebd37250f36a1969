//! `cargo xtask check` reports container images not pinned by digest.

mod common;

#[test]
fn check_reports_unpinned_image_with_file_and_line() {
    let fleet = common::fixture_fleet();
    let file = fleet.path().join("hosts/rpi-box-03/containers.toml");
    std::fs::write(
        &file,
        "[[container]]\nname = \"web\"\nimage = \"nginx:1.27\"\nports = [\"80:80\"]\n",
    )
    .unwrap();
    let out = common::xtask(fleet.path()).arg("check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{stdout}");
    assert!(
        stdout.contains(
            "hosts/rpi-box-03/containers.toml:3: container `web`: image `nginx:1.27` is not pinned by digest"
        ),
        "{stdout}"
    );
}

#[test]
fn shipped_fleet_has_only_pinned_images() {
    let fleet = common::fixture_fleet();
    let out = common::xtask(fleet.path()).arg("check").output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(!stdout.contains("not pinned"), "{stdout}");
}
