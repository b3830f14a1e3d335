//! Replay pacing: as fast as possible, at the recorded pace, or at a fixed rate.

use std::str::FromStr;
use std::time::{Duration, Instant};

/// How fast the input is replayed.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// As fast as the chain goes.
    Max,
    /// Keep the gaps between the trace's timestamps.
    Recorded,
    /// A fixed number of packets per second.
    Pps(f64),
}

impl FromStr for Pace {
    type Err = String;
    fn from_str(s: &str) -> Result<Pace, String> {
        match s {
            "max" => Ok(Pace::Max),
            "recorded" => Ok(Pace::Recorded),
            other => match other.parse::<f64>() {
                Ok(r) if r.is_finite() && r > 0.0 => Ok(Pace::Pps(r)),
                _ => Err(format!(
                    "bad pace \"{other}\": expected max, recorded, or a positive packets-per-second number"
                )),
            },
        }
    }
}

/// Sleeps as needed so packet `index` with trace timestamp `ts_ns` is released on time.
pub struct Pacer {
    pace: Pace,
    start: Instant,
    first_ts: Option<u64>,
}

impl Pacer {
    /// A pacer starting now.
    pub fn new(pace: Pace) -> Pacer {
        Pacer { pace, start: Instant::now(), first_ts: None }
    }

    /// Waits until packet number `index` (0-based) with timestamp `ts_ns` is due, and
    /// returns how long it waited.
    pub fn wait(&mut self, index: u64, ts_ns: u64) -> Duration {
        let Some(due) = self.due(index, ts_ns) else { return Duration::ZERO };
        let gap = due.saturating_sub(self.start.elapsed());
        if gap.is_zero() {
            return gap;
        }
        if gap > Duration::from_micros(200) {
            std::thread::sleep(gap - Duration::from_micros(100));
        }
        while self.start.elapsed() < due {
            std::hint::spin_loop();
        }
        gap
    }

    /// The instant packet number `index` with timestamp `ts_ns` is due (`None`: at once,
    /// pace `max`), without waiting: benchmarks time a packet from it.
    pub fn due_at(&mut self, index: u64, ts_ns: u64) -> Option<Instant> {
        self.due(index, ts_ns).map(|d| self.start + d)
    }

    /// How long until packet number `index` with timestamp `ts_ns` is due (zero when it is
    /// due now or the pace is `max`), without waiting.
    pub fn time_to(&mut self, index: u64, ts_ns: u64) -> Duration {
        self.due(index, ts_ns).map_or(Duration::ZERO, |due| due.saturating_sub(self.start.elapsed()))
    }

    /// When packet `index` with timestamp `ts_ns` is due, counted from the pacer's start
    /// (`None`: at once, pace `max`).
    fn due(&mut self, index: u64, ts_ns: u64) -> Option<Duration> {
        match self.pace {
            Pace::Max => None,
            Pace::Recorded => {
                let first = *self.first_ts.get_or_insert(ts_ns);
                Some(Duration::from_nanos(ts_ns.saturating_sub(first)))
            }
            Pace::Pps(r) => Some(Duration::from_secs_f64(index as f64 / r)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_paces() {
        assert_eq!("max".parse::<Pace>(), Ok(Pace::Max));
        assert_eq!("recorded".parse::<Pace>(), Ok(Pace::Recorded));
        assert_eq!("1000".parse::<Pace>(), Ok(Pace::Pps(1000.0)));
        assert!("-5".parse::<Pace>().is_err());
        assert!("fast".parse::<Pace>().is_err());
    }

    #[test]
    fn recorded_pace_keeps_the_trace_gaps_and_reports_the_wait() {
        // `t` starts before the pacer, so time measured from it is never less than the
        // pacer's own elapsed time.
        let t = Instant::now();
        let mut p = Pacer::new(Pace::Recorded);
        let base = 1_700_000_000_000_000_000u64;
        assert_eq!(p.wait(0, base), Duration::ZERO, "the first packet is due at once");
        let before_call = p.start.elapsed();
        let waited = p.wait(1, base + 3_000_000);
        // Due 3 ms after the pacer started: never early, and the wait is reported. The wait is
        // what was left of the 3 ms when the call came (less, never more, on a loaded machine).
        assert!(t.elapsed() >= Duration::from_millis(3));
        assert!(waited <= Duration::from_millis(3).saturating_sub(before_call), "{waited:?}");
        if before_call < Duration::from_millis(2) {
            assert!(waited > Duration::from_millis(0), "a wait of over 1 ms was not reported");
        }
        assert_eq!(Pacer::new(Pace::Max).wait(5, base), Duration::ZERO);
    }

    #[test]
    fn due_at_is_when_wait_returns() {
        let mut p = Pacer::new(Pace::Pps(1_000.0));
        assert!(Pacer::new(Pace::Max).due_at(5, 0).is_none());
        let due = p.due_at(3, 0).expect("a fixed rate has due times");
        assert_eq!(due - p.start, Duration::from_millis(3));
        p.wait(3, 0);
        assert!(Instant::now() >= due);
    }

    #[test]
    fn time_to_tells_the_wait_without_waiting() {
        // Packet 50 at 100 pps is due 500 ms after the start: far enough that a loaded
        // machine cannot make these bounds fail.
        let mut p = Pacer::new(Pace::Pps(100.0));
        let t = Instant::now();
        let left = p.time_to(50, 0);
        assert!(t.elapsed() < Duration::from_millis(250), "time_to waited");
        assert!(left <= Duration::from_millis(500) && left > Duration::from_millis(250), "{left:?}");
        assert_eq!(p.time_to(0, 0), Duration::ZERO, "packet 0 is due at once");
        assert_eq!(Pacer::new(Pace::Max).time_to(1_000_000, 0), Duration::ZERO);
    }

    #[test]
    fn fixed_rate_is_never_early() {
        let t = Instant::now();
        let mut p = Pacer::new(Pace::Pps(10_000.0));
        for i in 0..20 {
            p.wait(i, 0);
        }
        // Packet 19 is due 1.9 ms after the start; it can be late but not early.
        assert!(t.elapsed() >= Duration::from_micros(1900));
    }
}
