//! Request ids: one per request, in every log line, every event and the upstream request.
//!
//! An id that arrives from the client is attacker input: it is kept only when the peer is a
//! trusted proxy and the value is well formed, so that no one can forge ids into the audit log
//! or inject log syntax through them.

use std::fmt;

/// Longest request id accepted from a trusted proxy.
const MAX_LEN: usize = 128;

/// A request id: 1 to 128 characters of `[A-Za-z0-9._:-]`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestId(String);

impl RequestId {
    /// A new random, time-ordered id (UUIDv7).
    pub fn generate() -> Self {
        thread_local! {
            /// `Uuid::now_v7` orders ids through one process-wide mutex, which every worker
            /// took on every request. Ids made on one thread keep their order; ids of different
            /// threads within one millisecond need none, and random bits keep them apart.
            static CONTEXT: uuid::ContextV7 = const { uuid::ContextV7::new() };
        }
        let id = CONTEXT.with(|context| uuid::Uuid::new_v7(uuid::Timestamp::now(context)));
        // Encoded into a buffer, not through `Display`: every request makes one.
        let mut buffer = uuid::Uuid::encode_buffer();
        Self(id.simple().encode_lower(&mut buffer).to_owned())
    }

    /// Accepts `value` if it is well formed.
    pub fn parse(value: &str) -> Option<Self> {
        let well_formed = !value.is_empty()
            && value.len() <= MAX_LEN
            && value
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-' | b':'));
        well_formed.then(|| Self(value.to_owned()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_log_injection_and_overlong_ids() {
        assert!(RequestId::parse("abc-123.x_y:z").is_some());
        assert!(RequestId::parse("").is_none());
        assert!(RequestId::parse("a\nfake log line").is_none());
        assert!(RequestId::parse("a b").is_none());
        assert!(RequestId::parse(&"a".repeat(129)).is_none());
        assert!(RequestId::parse(&"a".repeat(128)).is_some());
    }

    #[test]
    fn generated_ids_are_well_formed_and_distinct() {
        let a = RequestId::generate();
        let b = RequestId::generate();
        assert_ne!(a, b);
        assert_eq!(RequestId::parse(a.as_str()), Some(a));
    }

    #[test]
    fn ids_made_on_one_thread_keep_their_order() {
        let ids: Vec<RequestId> = (0..2000).map(|_| RequestId::generate()).collect();
        assert!(
            ids.windows(2)
                .all(|pair| pair[0].as_str() < pair[1].as_str())
        );
    }
}
