//! A bounded memory of request-head values that were inspected and found clean.
//!
//! A client sends the same User-Agent, Accept-Language, Referer and session cookie on every
//! request, and a busy page is asked for by the same path and query many times over. A field's
//! hits depend only on its bytes, its location and the engine's detection paranoia (exclusions
//! and scoring come after), so a value that produced no hit at all produces none again and need
//! not be decoded and tokenized twice. Only such values are remembered: a value with any hit,
//! even one the engine's exclusions drop or its paranoia does not report, is inspected in full
//! every time.
//!
//! Body leaves are not remembered: they rarely repeat across requests, and a memory of them
//! would only flatter a benchmark that sends one body many times.
//!
//! Memory is bounded in bytes. Values are kept in two generations: when the current one is
//! full, it becomes the previous one and the oldest is dropped, so a value in steady use stays
//! while a flood of distinct values (an attacker's, or a scan) only cycles the memory and never
//! grows it. Keys are hashed with the standard library's randomly keyed SipHash, so nobody can
//! choose values that collide.

use std::collections::HashSet;

use crate::request::{Field, Location};

/// Longest value remembered: longer ones are rare in a request head and cost more to compare.
pub const MAX_REMEMBERED_VALUE: usize = 2048;

/// Default bound on the bytes of values one generation holds.
pub const DEFAULT_GENERATION_BYTES: usize = 1 << 20;

/// Values found clean, by detection paranoia and location. One per thread: it is not shared.
#[derive(Debug)]
pub struct CleanValues {
    current: Generation,
    previous: Generation,
    generation_bytes: usize,
}

#[derive(Debug, Default)]
struct Generation {
    /// Indexed by `slot`: detection paranoia 1–4 times the five locations.
    sets: [HashSet<Box<[u8]>>; SLOTS],
    bytes: usize,
}

const LOCATIONS: usize = 5;
const SLOTS: usize = 4 * LOCATIONS;

impl Default for CleanValues {
    fn default() -> Self {
        CleanValues::with_generation_bytes(DEFAULT_GENERATION_BYTES)
    }
}

impl CleanValues {
    /// A memory whose generations each hold at most `bytes` of values (two generations in all).
    pub fn with_generation_bytes(bytes: usize) -> Self {
        CleanValues {
            current: Generation::default(),
            previous: Generation::default(),
            generation_bytes: bytes,
        }
    }

    /// Whether `field` is a head value this memory may hold.
    pub(crate) fn applies_to(field: &Field<'_>) -> bool {
        field.location != Location::Body && field.value.len() <= MAX_REMEMBERED_VALUE
    }

    /// Whether `field`'s value was found clean at `detection_paranoia`.
    pub(crate) fn contains(&self, detection_paranoia: u8, field: &Field<'_>) -> bool {
        let slot = slot(detection_paranoia, field.location);
        let value: &[u8] = &field.value;
        self.current.sets[slot].contains(value) || self.previous.sets[slot].contains(value)
    }

    /// Remembers that `field`'s value produced no hit at `detection_paranoia`.
    pub(crate) fn insert(&mut self, detection_paranoia: u8, field: &Field<'_>) {
        let cost = field.value.len() + KEY_OVERHEAD;
        if self.current.bytes + cost > self.generation_bytes {
            self.previous = std::mem::take(&mut self.current);
        }
        let slot = slot(detection_paranoia, field.location);
        if self.current.sets[slot].insert(field.value.as_ref().into()) {
            self.current.bytes += cost;
        }
    }

    /// How many values are remembered, in both generations.
    pub fn len(&self) -> usize {
        [&self.current, &self.previous]
            .iter()
            .flat_map(|generation| generation.sets.iter())
            .map(HashSet::len)
            .sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// What a remembered value costs beyond its bytes: its box and its place in the table.
const KEY_OVERHEAD: usize = 32;

fn slot(detection_paranoia: u8, location: Location) -> usize {
    let level = usize::from(detection_paranoia.clamp(1, 4) - 1);
    let location = match location {
        Location::Path => 0,
        Location::Query => 1,
        Location::Body => 2,
        Location::Cookie => 3,
        Location::Header => 4,
    };
    level * LOCATIONS + location
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(value: &str) -> Field<'_> {
        Field::new(Location::Header, "user-agent", value.as_bytes())
    }

    #[test]
    fn values_are_kept_apart_by_location_and_paranoia() {
        let mut memo = CleanValues::default();
        memo.insert(1, &header("curl/8.5.0"));
        assert!(memo.contains(1, &header("curl/8.5.0")));
        assert!(!memo.contains(2, &header("curl/8.5.0")));
        let as_cookie = Field::new(Location::Cookie, "user-agent", &b"curl/8.5.0"[..]);
        assert!(!memo.contains(1, &as_cookie));
        assert!(!memo.contains(1, &header("curl/8.5.1")));
    }

    #[test]
    fn memory_stays_within_two_generations() {
        let mut memo = CleanValues::with_generation_bytes(10 * (8 + KEY_OVERHEAD));
        for index in 0..1000 {
            memo.insert(1, &header(&format!("agent{index:03}")));
        }
        assert!(memo.len() <= 20, "{} values kept", memo.len());
        // The newest values are kept, the oldest dropped.
        assert!(memo.contains(1, &header("agent999")));
        assert!(!memo.contains(1, &header("agent000")));
    }

    #[test]
    fn bodies_and_long_values_are_not_remembered() {
        assert!(!CleanValues::applies_to(&Field::new(
            Location::Body,
            "note",
            &b"hello"[..]
        )));
        let long = "a".repeat(MAX_REMEMBERED_VALUE + 1);
        assert!(!CleanValues::applies_to(&header(&long)));
        assert!(CleanValues::applies_to(&header("curl/8.5.0")));
    }
}
