//! The last minute of requests, for the live status page: how many per
//! second, and latency percentiles.
//!
//! A ring of 60 one-second slots, each a small histogram with exponential
//! buckets (0.1 ms doubling to ~27 s), reused as time moves on: recording a
//! request is an index computation and two increments under an uncontended
//! mutex, and memory stays fixed however many requests come. Percentiles
//! are read off the merged histogram, so they are bucket bounds (within a
//! factor of two), which is what a person glancing at a page needs.

use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

const SLOTS: usize = 60;
const BUCKETS: usize = 19;
/// Upper bound of the first bucket, in seconds; each next one doubles.
const FIRST: f64 = 0.0001;

#[derive(Clone, Copy)]
struct Slot {
    /// The second (since the epoch) this slot counts; stale otherwise.
    second: u64,
    count: u64,
    buckets: [u64; BUCKETS],
}

const EMPTY: Slot = Slot {
    second: 0,
    count: 0,
    buckets: [0; BUCKETS],
};

pub struct Recent {
    slots: Mutex<[Slot; SLOTS]>,
}

/// What the status page shows about the last minute.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RecentSummary {
    /// Requests in each of the last 60 whole seconds, oldest first.
    pub per_second: Vec<u64>,
    /// Mean requests per second over those 60 seconds.
    pub rate: f64,
    /// Latency percentiles in milliseconds (bucket upper bounds).
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

fn bucket(seconds: f64) -> usize {
    let mut bound = FIRST;
    for i in 0..BUCKETS - 1 {
        if seconds <= bound {
            return i;
        }
        bound *= 2.0;
    }
    BUCKETS - 1
}

fn bucket_bound_ms(i: usize) -> f64 {
    FIRST * 1000.0 * f64::from(1u32 << i)
}

fn now_second() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Default for Recent {
    fn default() -> Self {
        Recent {
            slots: Mutex::new([EMPTY; SLOTS]),
        }
    }
}

impl Recent {
    pub fn record(&self, seconds: f64) {
        self.record_at(now_second(), seconds);
    }

    fn record_at(&self, second: u64, seconds: f64) {
        let mut slots = self.slots.lock().unwrap();
        let slot = &mut slots[(second % SLOTS as u64) as usize];
        if slot.second != second {
            *slot = Slot { second, ..EMPTY };
        }
        slot.count += 1;
        slot.buckets[bucket(seconds)] += 1;
    }

    pub fn summary(&self) -> RecentSummary {
        self.summary_at(now_second())
    }

    /// The 60 whole seconds before `now` (the current one is still filling).
    fn summary_at(&self, now: u64) -> RecentSummary {
        let slots = *self.slots.lock().unwrap();
        let mut per_second = Vec::with_capacity(SLOTS);
        let mut merged = [0u64; BUCKETS];
        for second in now.saturating_sub(SLOTS as u64)..now {
            let slot = &slots[(second % SLOTS as u64) as usize];
            if slot.second == second {
                per_second.push(slot.count);
                for (m, b) in merged.iter_mut().zip(slot.buckets.iter()) {
                    *m += b;
                }
            } else {
                per_second.push(0);
            }
        }
        let total: u64 = merged.iter().sum();
        let percentile = |p: f64| -> Option<f64> {
            if total == 0 {
                return None;
            }
            let rank = (p * total as f64).ceil() as u64;
            let mut seen = 0;
            for (i, n) in merged.iter().enumerate() {
                seen += n;
                if seen >= rank {
                    return Some(bucket_bound_ms(i));
                }
            }
            Some(bucket_bound_ms(BUCKETS - 1))
        };
        RecentSummary {
            rate: total as f64 / SLOTS as f64,
            per_second,
            p50_ms: percentile(0.5),
            p90_ms: percentile(0.9),
            p99_ms: percentile(0.99),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_per_second_and_percentiles_over_the_last_minute() {
        let r = Recent::default();
        // 90 fast requests and 10 slow ones, one second ago.
        for _ in 0..90 {
            r.record_at(1_000, 0.0008);
        }
        for _ in 0..10 {
            r.record_at(1_000, 0.2);
        }
        r.record_at(1_001, 0.0008); // the current second: not counted yet
        let s = r.summary_at(1_001);
        assert_eq!(s.per_second.len(), 60);
        assert_eq!(*s.per_second.last().unwrap(), 100);
        assert_eq!(s.per_second.iter().sum::<u64>(), 100);
        assert!((s.rate - 100.0 / 60.0).abs() < 1e-9);
        // 0.8 ms falls in the bucket up to 0.8 ms; 200 ms in the one up to 204.8.
        assert_eq!(s.p50_ms, Some(0.8));
        assert_eq!(s.p90_ms, Some(0.8));
        assert_eq!(s.p99_ms, Some(204.8));
    }

    #[test]
    fn old_seconds_fall_out_and_slots_are_reused() {
        let r = Recent::default();
        r.record_at(100, 0.01);
        // A minute later the same slot serves a new second.
        r.record_at(160, 0.01);
        let s = r.summary_at(161);
        assert_eq!(s.per_second.iter().sum::<u64>(), 1);
        assert_eq!(
            r.summary_at(300),
            RecentSummary {
                per_second: vec![0; 60],
                ..RecentSummary::default()
            }
        );
    }
}
