//! `--dry-run`: every command a deploy or rollback of a host would run.

use std::process::Command;

use super::host::{Action, Ctx, declared};
use super::{guard, remote};
use crate::inventory::Host;
use crate::nix;
use crate::ssh::{self, Target};

/// Every command a deploy of `h` would run, for `--dry-run` (values known
/// only while deploying are shown as <placeholders>).
pub fn plan(ctx: &Ctx, h: &Host, rollback_to: Option<Option<u64>>) -> Vec<String> {
    let t = Target::of(h);
    let ssh = ctx.ssh;
    let dir = format!("{}/{}", remote::STATE, ctx.token);
    let show = |c: Command| format!("$ {}", ssh::show(&c));
    let mut lines = Vec::new();
    let declared = declared(ctx, h).unwrap_or_default().join(" ");
    let rolling = rollback_to.is_some();
    if !rolling {
        lines.push(show(nix::eval_apply(
            &nix::host_attr(ctx.root, &h.name, ""),
            &guard::apply_expr(&h.user),
        )));
    }
    lines.push(show(ssh.master_command(&t)));
    lines.push(format!(
        "{}  # held until the host is done",
        show(ssh.command(&t, "<LOCK>", &[&super::lock::holder(&ctx.token)]))
    ));
    lines.push(show(ssh.command(&t, "<PROBE>", &[&declared])));
    let (how, target) = if let Some(to) = rollback_to {
        (
            "gen",
            to.map(|n| n.to_string())
                .unwrap_or_else(|| "<previous-generation>".into()),
        )
    } else {
        lines.push(
            "# lock-out guard: ssh-keygen -lf <authorized keys of the new configuration>".into(),
        );
        let attr = nix::host_attr(ctx.root, &h.name, ".system.build.toplevel");
        match ctx.build_host.clone().or_else(|| h.build_host.clone()) {
            None => lines.push(show(nix::build_json(&attr))),
            Some(bh) => {
                lines.push(format!("$ nix eval --raw {attr}.drvPath"));
                lines.push(format!("$ nix copy --derivation --to ssh://{bh} <drv>"));
                lines.push(show(ssh.plain_command(&bh, "nix-store --realise <drv>")));
                lines.push(show(nix::copy_from(
                    &bh,
                    &ssh.nix_sshopts(None),
                    "<toplevel>",
                )));
            }
        }
        lines.push(show(nix::closure_info("<toplevel>")));
        lines.push(format!(
            "{}  < <closure paths>",
            show(ssh.command(&t, remote::MISSING, &[]))
        ));
        lines.push(show(nix::copy_to(
            &t.destination(),
            &ssh.nix_sshopts_to(&t),
            "<toplevel>",
        )));
        ("set", "<toplevel>".to_string())
    };
    lines.push(format!(
        "{}  < <HELPER>",
        show(ssh.command(&t, remote::INSTALL, &[&dir]))
    ));
    lines.push(show(ssh.command(
        &t,
        remote::ACTIVATE,
        &[
            &dir,
            ctx.action.as_str(),
            how,
            &target,
            "<current-generation>",
            &ctx.confirm_timeout.to_string(),
            &ctx.activation_timeout.to_string(),
        ],
    )));
    if ctx.action == Action::Switch {
        lines.push(format!(
            "{}  # every second until confirmed",
            show(ssh.fresh_command(&t, remote::CALL, &["confirm", &dir]))
        ));
        lines.push(show(ssh.command(&t, "<PROBE>", &[&declared])));
    }
    lines.push(show(ssh.command(
        &t,
        remote::WRITE_RECORD,
        &[
            "<system>",
            "<generation>",
            "<commit>",
            "<time>",
            &super::lock::by(),
        ],
    )));
    lines.push(show({
        let mut c = Command::new("ssh");
        c.args(["-O", "exit"]).arg(t.destination());
        c
    }));
    lines
}
