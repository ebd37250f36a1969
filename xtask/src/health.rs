//! A Pi's vital signs for `cargo xtask status`: temperature, the firmware's
//! throttling flags, memory, root filesystem use and load. One shell
//! script (run in the same SSH call as the status probe, every line
//! prefixed `health_`) and a pure parser.
//!
//! Throttling comes from the Raspberry Pi firmware's `get_throttled` word,
//! which the Raspberry Pi kernel exposes in sysfs (the same value as
//! `vcgencmd get_throttled`); a mainline kernel exposes only the
//! under-voltage alarm (hwmon `rpi_volt`, `in0_lcrit_alarm`). Neither on a
//! machine that is not a Pi: the column then says `-`.

use serde::Serialize;

pub const SCRIPT: &str = r#"t=$(cat /sys/class/thermal/thermal_zone0/temp 2>/dev/null) && echo "health_temp=$t"
for f in /sys/devices/platform/soc/soc:firmware/get_throttled /sys/devices/platform/soc/*.firmware/get_throttled; do
  [ -r "$f" ] && echo "health_throttled=$(cat "$f")" && break
done
for h in /sys/class/hwmon/hwmon*; do
  [ "$(cat "$h/name" 2>/dev/null)" = rpi_volt ] && echo "health_undervolt=$(cat "$h/in0_lcrit_alarm" 2>/dev/null)"
done
echo "health_mem=$(awk '/^MemTotal:/{t=$2} /^MemAvailable:/{a=$2} END{print t, a}' /proc/meminfo)"
echo "health_root=$(df -Pk / 2>/dev/null | tail -n 1)"
echo "health_load=$(cat /proc/loadavg)"
"#;

/// Unknown values are `None` (`null` in JSON).
#[derive(Serialize, Debug, Default, Clone, PartialEq)]
pub struct Health {
    pub temperature_celsius: Option<f64>,
    /// The firmware's word (`vcgencmd get_throttled`), when exposed.
    pub throttled_flags: Option<u32>,
    /// What the flags (or the under-voltage alarm) say, e.g.
    /// `under-voltage now`; empty when all is well.
    pub throttling: Option<Vec<String>>,
    pub memory_total_kib: Option<u64>,
    pub memory_available_kib: Option<u64>,
    pub root_used_percent: Option<u8>,
    pub root_free_kib: Option<u64>,
    pub load: Option<[f64; 3]>,
}

/// The firmware's `get_throttled` bits, in words.
pub fn throttling(flags: u32) -> Vec<String> {
    const BITS: [&str; 4] = [
        "under-voltage",
        "frequency capped",
        "throttled",
        "soft temperature limit",
    ];
    let mut v = Vec::new();
    for (i, what) in BITS.iter().enumerate() {
        if flags & (1 << i) != 0 {
            v.push(format!("{what} now"));
        } else if flags & (1 << (16 + i)) != 0 {
            v.push(format!("{what} since boot"));
        }
    }
    v
}

/// Reads the `health_*` lines of a probe's output.
pub fn parse(text: &str) -> Health {
    let mut h = Health::default();
    for line in text.lines() {
        let Some((k, v)) = line.split_once('=') else {
            continue;
        };
        let v = v.trim();
        let words: Vec<&str> = v.split_whitespace().collect();
        match k {
            "health_temp" => {
                h.temperature_celsius = v.parse::<f64>().ok().map(|m| (m / 100.0).round() / 10.0)
            }
            "health_throttled" => {
                h.throttled_flags = u32::from_str_radix(v.trim_start_matches("0x"), 16).ok();
                h.throttling = h.throttled_flags.map(throttling);
            }
            "health_undervolt" if h.throttled_flags.is_none() => {
                h.throttling = Some(if v == "1" {
                    vec!["under-voltage now".into()]
                } else {
                    Vec::new()
                });
            }
            "health_mem" => {
                h.memory_total_kib = words.first().and_then(|w| w.parse().ok());
                h.memory_available_kib = words.get(1).and_then(|w| w.parse().ok());
            }
            "health_root" => {
                h.root_free_kib = words.get(3).and_then(|w| w.parse().ok());
                h.root_used_percent = words
                    .get(4)
                    .and_then(|w| w.trim_end_matches('%').parse().ok());
            }
            "health_load" => {
                let l: Vec<f64> = words
                    .iter()
                    .take(3)
                    .filter_map(|w| w.parse().ok())
                    .collect();
                h.load = (l.len() == 3).then(|| [l[0], l[1], l[2]]);
            }
            _ => {}
        }
    }
    h
}

/// The table's columns: TEMP, THROTTLING, MEMORY, ROOT FS, LOAD.
pub fn columns(h: &Health) -> [String; 5] {
    let dash = || "-".to_string();
    [
        h.temperature_celsius
            .map(|t| format!("{t:.1}°C"))
            .unwrap_or_else(dash),
        match &h.throttling {
            None => dash(),
            Some(v) if v.is_empty() => "no".into(),
            Some(v) => v.join(", "),
        },
        match (h.memory_total_kib, h.memory_available_kib) {
            (Some(t), Some(a)) if t > 0 => {
                format!("{}/{} MiB", t.saturating_sub(a) / 1024, t / 1024)
            }
            _ => dash(),
        },
        h.root_used_percent
            .map(|p| format!("{p}%"))
            .unwrap_or_else(dash),
        h.load.map(|l| format!("{:.2}", l[0])).unwrap_or_else(dash),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pi_that_was_throttled() {
        let h = parse(
            "health_temp=61234\nhealth_throttled=0x50005\nhealth_mem=3884000 2884000\nhealth_root=/dev/mmcblk0p2 30000000 24000000 6000000 80% /\nhealth_load=0.52 0.40 0.31 1/200 999\nother=1\n",
        );
        assert_eq!(h.temperature_celsius, Some(61.2));
        assert_eq!(
            h.throttling.as_deref().unwrap(),
            ["under-voltage now", "throttled now"]
        );
        assert_eq!(
            columns(&h),
            [
                "61.2°C",
                "under-voltage now, throttled now",
                "976/3792 MiB",
                "80%",
                "0.52"
            ]
            .map(String::from)
        );
        assert_eq!(throttling(0x20000), ["frequency capped since boot"]);
        assert!(throttling(0).is_empty());
    }

    #[test]
    fn a_machine_without_pi_firmware() {
        let h = parse("health_mem=1000 500\nhealth_undervolt=0\n");
        assert_eq!(h.temperature_celsius, None);
        assert_eq!(columns(&h)[0], "-");
        assert_eq!(columns(&h)[1], "no");
        assert_eq!(parse("").throttling, None);
    }
}
