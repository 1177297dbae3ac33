//! A share of one CPU for the gateway under test, through a CPU cgroup (v2's `cpu.max`, or v1's
//! CFS quota): the way a container's CPU limit confines it. On two shared cores the load
//! generator and the fake saturate before a whole core of gateway does, so the overload
//! section could not offer twice the gateway's capacity; a gateway given part of a core
//! saturates first, and its 1.5x and 2x runs are the gateway's, not the generator's.

use std::path::PathBuf;

/// The scheduler period: short, so a throttled gateway waits at most a few milliseconds for
/// its next slice (a 100 ms period would stall it for up to 70 ms at a 0.3 share).
pub const PERIOD_US: u64 = 10_000;

/// A cgroup holding the gateway, removed when dropped (after the gateway has exited).
pub struct CpuShare {
    dir: PathBuf,
}

impl CpuShare {
    /// Moves the process `pid` (all its threads) into a new cgroup that may use `share` of
    /// one CPU.
    pub fn confine(pid: u32, share: f64) -> Result<Self, String> {
        assert!(
            share > 0.0 && share <= 1.0,
            "a share of one CPU is in (0, 1]"
        );
        let quota = ((PERIOD_US as f64) * share).round() as u64;
        let name = format!("dsgw-bench-{}", std::process::id());
        let v2 = PathBuf::from("/sys/fs/cgroup/cgroup.controllers");
        let (dir, limits): (PathBuf, Vec<(&str, String)>) = if v2.exists() {
            (
                PathBuf::from("/sys/fs/cgroup").join(&name),
                vec![("cpu.max", format!("{quota} {PERIOD_US}"))],
            )
        } else {
            (
                PathBuf::from("/sys/fs/cgroup/cpu").join(&name),
                vec![
                    ("cpu.cfs_period_us", PERIOD_US.to_string()),
                    ("cpu.cfs_quota_us", quota.to_string()),
                ],
            )
        };
        let fail = |what: &str, e: std::io::Error| {
            format!(
                "{what} {}: {e} (a CPU share needs a writable CPU cgroup: root, cgroup v2 with the cpu controller or v1's cpu hierarchy)",
                dir.display()
            )
        };
        std::fs::create_dir(&dir).map_err(|e| fail("creating", e))?;
        let share = Self { dir: dir.clone() };
        for (file, value) in limits {
            std::fs::write(dir.join(file), value).map_err(|e| fail(file, e))?;
        }
        std::fs::write(dir.join("cgroup.procs"), pid.to_string())
            .map_err(|e| fail("cgroup.procs", e))?;
        Ok(share)
    }

    /// Times the cgroup ran out of its quota and was throttled, and for how long in all.
    pub fn throttled(&self) -> Option<(u64, u64)> {
        let stat = std::fs::read_to_string(self.dir.join("cpu.stat")).ok()?;
        let field = |name: &str| {
            stat.lines()
                .find_map(|l| l.strip_prefix(name)?.trim().parse::<u64>().ok())
        };
        // v2 counts microseconds, v1 nanoseconds.
        let us = field("throttled_usec").or_else(|| field("throttled_time").map(|ns| ns / 1000));
        Some((field("nr_throttled")?, us?))
    }
}

impl Drop for CpuShare {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}
