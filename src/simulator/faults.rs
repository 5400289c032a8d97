//! Fault injection, reproducible from a seed: the n-th decision is the same for the same seed,
//! whatever the timing.

use std::time::Duration;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;

#[derive(Clone, Debug)]
pub struct FaultConfig {
    /// Share of Graph and SharePoint requests (and `$batch` items) answered 429/503.
    pub rate: f64,
    pub seed: u64,
    /// Largest `Retry-After` given, in seconds (SharePoint rounds up to whole seconds).
    pub max_retry_after: f64,
    /// Every SharePoint request gets 503: the app is blocked.
    pub blocked: bool,
    /// The `Retry-After` of a blocked app's 503s, in seconds.
    pub blocked_retry_after: f64,
    /// Added to every response.
    pub latency: Duration,
    /// SharePoint requests allowed per minute; `RateLimit-*` headers from 80% of it, 429 beyond.
    pub sharepoint_quota_per_minute: u32,
}

impl Default for FaultConfig {
    fn default() -> Self {
        FaultConfig {
            rate: 0.0,
            seed: 1,
            max_retry_after: 2.0,
            blocked: false,
            blocked_retry_after: 120.0,
            latency: Duration::ZERO,
            sharepoint_quota_per_minute: 600,
        }
    }
}

/// One throttling decision.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Fault {
    pub status: u16,
    /// Seconds; whole for SharePoint, fractional for Graph.
    pub retry_after: f64,
}

impl Fault {
    /// The `Retry-After` header value.
    pub fn header(&self) -> String {
        if self.retry_after.fract() == 0.0 {
            format!("{}", self.retry_after as u64)
        } else {
            format!("{:.3}", self.retry_after)
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    Graph,
    SharePoint,
}

pub struct Faults {
    config: FaultConfig,
    rng: ChaCha8Rng,
}

impl Faults {
    pub fn new(config: FaultConfig) -> Faults {
        Faults { rng: ChaCha8Rng::seed_from_u64(config.seed), config }
    }

    pub fn config(&self) -> &FaultConfig {
        &self.config
    }

    /// Draws the next decision: `None` lets the request through.
    pub fn draw(&mut self, service: Service) -> Option<Fault> {
        let roll: f64 = self.rng.random();
        let pick: f64 = self.rng.random();
        if roll >= self.config.rate {
            return None;
        }
        let max = self.config.max_retry_after.max(0.1);
        Some(match service {
            // Graph: 429 TooManyRequests, Retry-After may be fractional.
            Service::Graph => Fault { status: 429, retry_after: (0.1 + pick * (max - 0.1)).max(0.1) },
            // SharePoint: 429 or 503, whole seconds.
            Service::SharePoint => Fault {
                status: if pick < 0.5 { 429 } else { 503 },
                retry_after: (1.0 + (pick * max).floor()).min(max.ceil()),
            },
        })
    }

    /// Shuffles `$batch` responses (Graph returns them in any order).
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        use rand::seq::SliceRandom;
        items.shuffle(&mut self.rng);
    }

    pub fn rng(&mut self) -> &mut ChaCha8Rng {
        &mut self.rng
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_seed_gives_the_same_faults() {
        let config = FaultConfig { rate: 0.3, seed: 42, ..FaultConfig::default() };
        let run = |c: &FaultConfig| {
            let mut f = Faults::new(c.clone());
            (0..200)
                .map(|i| f.draw(if i % 2 == 0 { Service::Graph } else { Service::SharePoint }))
                .collect::<Vec<_>>()
        };
        let a = run(&config);
        assert_eq!(a, run(&config));
        let hits = a.iter().flatten().count();
        assert!((30..=90).contains(&hits), "{hits} faults of 200 at 30%");
        assert_ne!(a, run(&FaultConfig { seed: 43, ..config.clone() }));
        for (i, f) in a.iter().enumerate() {
            if let Some(f) = f {
                if i % 2 == 1 {
                    assert_eq!(f.retry_after.fract(), 0.0, "SharePoint gives whole seconds");
                    assert!(f.status == 429 || f.status == 503);
                } else {
                    assert_eq!(f.status, 429);
                }
                assert!(f.retry_after > 0.0 && f.retry_after <= 2.0);
            }
        }
    }
}
