//! Resume cursors: what a viewer holds instead of the log's seq.
//!
//! The seq counts every event of the hub. A party that received seq 40 and then seq 47
//! would know that six events it may not see happened in between: activity of other
//! parties, even of red incidents. So no value a viewer receives is a seq. Every event,
//! `stream.live`, `/events` page and incident list carries a *cursor* instead: the seq
//! sealed under a key of the hub, kept with the instance secrets so that every replica
//! seals alike. A cursor is
//! - **deterministic**: one event has one cursor, for every viewer and on every replica,
//!   so a client drops an event it already has by comparing cursors;
//! - **opaque**: nothing of the seq can be read from it, not even which of two cursors
//!   comes first (clients keep the order the hub sends in);
//! - **authenticated**: a cursor the hub did not give out is refused (422), never read as
//!   some other position.
//!
//! The key is the hub's, not each viewer's: the feed serialises each event once for all
//! its clients (see `feed`), and a key per viewer would mean one serialisation per client
//! per event. A viewer learns nothing more from a shared key: equal cursors only say
//! "the same event", which the incident id already says.
//!
//! The construction is deterministic authenticated encryption in the SIV style, from
//! HMAC-SHA256 alone: `tag = HMAC(k_tag, seq)[..8]`, `body = seq XOR HMAC(k_mask,
//! tag)[..8]`, cursor = base64url(tag ‖ body) (22 characters). Opening unmasks the body
//! with the tag and checks that the tag is that seq's.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The name of the instance secret the cursor keys derive from.
pub const KEY_NAME: &str = "stream.cursor_key";

/// The cursor of the log's start: `after=0` replays everything a viewer may see. It names
/// no event, so it needs no sealing.
pub const START: &str = "0";

const LEN: usize = 22;

/// Seals seqs into cursors and opens them again.
#[derive(Clone)]
pub struct Cursors {
    tag: Hmac<Sha256>,
    mask: Hmac<Sha256>,
}

impl std::fmt::Debug for Cursors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Cursors(..)")
    }
}

/// A value that is not a cursor of this hub.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("not a cursor this hub gave out; use the `cursor` of an event, `stream.live` or a list, or 0 for the start")]
pub struct BadCursor;

impl Cursors {
    /// Event cursors, with keys derived from the instance secret [`KEY_NAME`].
    pub fn new(secret: &str) -> Cursors {
        Cursors::with_purpose(secret, "cursor")
    }

    /// Page ids for bots and email headers (outbox rows are numbered hub-wide too): the
    /// same sealing under keys of their own, so a page id never opens as a position.
    pub fn page_ids(secret: &str) -> Cursors {
        Cursors::with_purpose(secret, "page id")
    }

    fn with_purpose(secret: &str, purpose: &str) -> Cursors {
        let derive = |part: &str| {
            let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
            mac.update(format!("focalpoint {purpose} {part}").as_bytes());
            let key = mac.finalize().into_bytes();
            Hmac::<Sha256>::new_from_slice(&key).expect("HMAC takes any key length")
        };
        Cursors { tag: derive("tag"), mask: derive("mask") }
    }

    pub fn seal(&self, seq: i64) -> String {
        if seq == 0 {
            return START.to_string();
        }
        let tag = self.tag_of(seq);
        let body = (seq as u64 ^ self.mask_of(&tag)).to_be_bytes();
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&tag);
        raw[8..].copy_from_slice(&body);
        URL_SAFE_NO_PAD.encode(raw)
    }

    pub fn open(&self, cursor: &str) -> Result<i64, BadCursor> {
        if cursor == START {
            return Ok(0);
        }
        if cursor.len() != LEN {
            return Err(BadCursor);
        }
        let raw = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| BadCursor)?;
        let (tag, body) = raw.split_at(8);
        let tag: [u8; 8] = tag.try_into().map_err(|_| BadCursor)?;
        let body: [u8; 8] = body.try_into().map_err(|_| BadCursor)?;
        let seq = (u64::from_be_bytes(body) ^ self.mask_of(&tag)) as i64;
        // Constant time: a forger learns nothing from how long the refusal took.
        let expected = self.tag_of(seq);
        if seq <= 0 || !bool::from(subtle::ConstantTimeEq::ct_eq(&expected[..], &tag[..])) {
            return Err(BadCursor);
        }
        Ok(seq)
    }

    fn tag_of(&self, seq: i64) -> [u8; 8] {
        let mut mac = self.tag.clone();
        mac.update(&seq.to_be_bytes());
        first8(&mac.finalize().into_bytes())
    }

    fn mask_of(&self, tag: &[u8; 8]) -> u64 {
        let mut mac = self.mask.clone();
        mac.update(tag);
        u64::from_be_bytes(first8(&mac.finalize().into_bytes()))
    }
}

fn first8(bytes: &[u8]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&bytes[..8]);
    out
}

/// Whether `s` could be a cursor (base64url, or [`START`]) without opening it: for clients
/// that pass one on in a URL, where anything else would need escaping.
pub fn looks_like(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_opens_to_its_seq_and_hides_it() {
        let c = Cursors::new("fp_0123456789abcdef0123456789abcdef");
        for seq in [1, 2, 3, 40, 47, 1 << 40, i64::MAX] {
            let sealed = c.seal(seq);
            assert_eq!(sealed.len(), LEN);
            assert!(!sealed.contains(&seq.to_string()) || seq < 10, "{sealed} shows {seq}");
            assert_eq!(c.open(&sealed), Ok(seq));
        }
        assert_eq!(c.seal(0), START);
        assert_eq!(c.open(START), Ok(0));
        // Neighbouring seqs share nothing visible: no common prefix to count on.
        let (a, b) = (c.seal(41), c.seal(42));
        assert_ne!(a[..4], b[..4]);
    }

    #[test]
    fn cursors_of_another_key_or_tampered_ones_are_refused() {
        let (mine, theirs) = (Cursors::new("fp_a"), Cursors::new("fp_b"));
        assert_eq!(mine.open(&theirs.seal(5)), Err(BadCursor));
        let good = mine.seal(5);
        let mut bytes = good.clone().into_bytes();
        bytes[20] = if bytes[20] == b'A' { b'B' } else { b'A' };
        let tampered = String::from_utf8(bytes).expect("ascii");
        assert_eq!(mine.open(&tampered), Err(BadCursor));
        for bad in ["", "5", "-1", "00", "not a cursor at all!!!", "ééééééééééé", &good[..21]] {
            assert_eq!(mine.open(bad), Err(BadCursor), "{bad:?}");
        }
        // The same key seals alike on every replica.
        assert_eq!(Cursors::new("fp_a").seal(5), mine.seal(5));
        // A page id is not a cursor.
        assert_eq!(mine.open(&Cursors::page_ids("fp_a").seal(5)), Err(BadCursor));
    }
}
