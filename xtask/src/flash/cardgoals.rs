//! The card-speed benchmark's goals, worked out rather than only judged:
//! `flash` against `bmaptool copy --bmap` when both write the same mapped
//! bytes to the same card, and whether a method's writes escaped the
//! throttle (see documentation/flash.md, "What the goals can reach").

/// A note when part of a method's writes reached the device outside the
/// throttle (page-cache writeback by the kernel's flusher threads, which
/// cgroup v1 blkio does not charge to the writer): its time is then
/// optimistic by up to those bytes at the card's write speed.
pub fn escaped(on_device: u64, throttled: u64, write_bps: f64) -> Option<String> {
    let out = on_device.saturating_sub(throttled);
    (out > on_device / 100).then(|| {
        format!(
            "{} MB of its {} MB reached the device outside the throttle (written back by the kernel, not by its own tasks): its time is optimistic by up to {:.1} s",
            out / 1_000_000,
            on_device / 1_000_000,
            out as f64 / write_bps
        )
    })
}

/// The card and the image's mapped bytes.
pub struct Speeds {
    pub mapped: f64,
    pub write: f64,
    pub read: f64,
}

/// The verdict on "flash ≤ `ratio`× bmaptool --bmap" and why: met; not met
/// though reachable (flash's own overhead); or not reachable on this card,
/// because both write the same mapped bytes at the same speed, so even at
/// its physical `limit` flash would be `limit ÷ bmaptool`× it. The goal
/// needs bmaptool to run at ≥ `ratio⁻¹ × limit ÷ (mapped ÷ write)`× its own
/// limit (1 + write ÷ read with the read-back, 1.25 for 0.8×).
pub fn against_bmaptool(
    got: f64,
    bmaptool: f64,
    limit: f64,
    ratio: f64,
    reads_back: bool,
    card: &Speeds,
) -> (&'static str, String) {
    let write_limit = card.mapped / card.write;
    let k = bmaptool / write_limit;
    let needs = limit / write_limit / ratio;
    let read_back = if reads_back {
        format!(
            ", and flash reads them back ({:.1} s at {:.0} MB/s), which bmaptool never does",
            card.mapped / card.read,
            card.read / 1e6
        )
    } else {
        String::new()
    };
    if got <= bmaptool * ratio {
        return (
            "met",
            format!("bmaptool ran at {k:.2}× its limit, more than the {needs:.2}× the goal needs"),
        );
    }
    if limit > bmaptool * ratio {
        return (
            "NOT met, not reachable here",
            format!(
                "both write the same {:.0} MiB at {:.0} MB/s{read_back}; even at the card's limit ({limit:.1} s) flash would be {:.2}× bmaptool, which ran at {k:.2}× its own limit ({write_limit:.1} s): the goal needs bmaptool at ≥ {needs:.2}× its limit",
                card.mapped / 1048576.0,
                card.write / 1e6,
                limit / bmaptool
            ),
        );
    }
    (
        "NOT met, reachable",
        format!(
            "at the card's limit ({limit:.1} s) flash would be {:.2}× bmaptool: the {:.1} s above it are flash's own overhead",
            limit / bmaptool,
            got - limit
        ),
    )
}

/// One goal's verdict: `got` ≤ `limit` × `ratio`.
pub fn verdict(got: f64, against: f64, ratio: f64) -> &'static str {
    if got <= against * ratio {
        "met"
    } else {
        "NOT met"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_outside_the_throttle_are_named() {
        assert!(escaped(100_000_000, 100_000_000, 25e6).is_none());
        let note = escaped(100_000_000, 50_000_000, 25e6).unwrap();
        assert!(
            note.contains("50 MB of its 100 MB") && note.contains("2.0 s"),
            "{note}"
        );
    }

    #[test]
    fn goals_against_bmaptool_say_why() {
        // 1000 MiB mapped, 25 MB/s write, 80 MB/s read: 41.9 s to write, 13.1 s to read.
        let card = Speeds {
            mapped: 1000.0 * 1048576.0,
            write: 25e6,
            read: 80e6,
        };
        let w = card.mapped / card.write;
        let wr = w + card.mapped / card.read;
        // bmaptool at 1.17× its limit: the read-back alone makes 1.0× unreachable.
        let (word, why) = against_bmaptool(wr * 1.01, w * 1.17, wr, 1.0, true, &card);
        assert_eq!(word, "NOT met, not reachable here");
        assert!(
            why.contains("reads them back") && why.contains("≥ 1.31×"),
            "{why}"
        );
        // ... and 0.8× unreachable without it (it needs bmaptool at ≥ 1.25×).
        let (word, why) = against_bmaptool(w * 1.02, w * 1.17, w, 0.8, false, &card);
        assert_eq!(word, "NOT met, not reachable here");
        assert!(
            why.contains("≥ 1.25×") && !why.contains("reads them back"),
            "{why}"
        );
        // A slow bmaptool (1.5× its limit) makes both reachable; overhead then decides.
        let (word, _) = against_bmaptool(w * 1.1, w * 1.5, w, 0.8, false, &card);
        assert_eq!(word, "met");
        let (word, why) = against_bmaptool(w * 1.3, w * 1.5, w, 0.8, false, &card);
        assert_eq!(word, "NOT met, reachable");
        assert!(why.contains("own overhead"), "{why}");
    }

    #[test]
    fn verdicts() {
        assert_eq!(verdict(10.0, 10.0, 1.0), "met");
        assert_eq!(verdict(8.1, 10.0, 0.8), "NOT met");
        assert_eq!(verdict(10.9, 10.0, 1.1), "met");
    }
}
