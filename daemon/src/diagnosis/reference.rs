//! Reference codes: a short code for one verdict (one diagnosis event) that
//! an OPD operator reads out on the phone and Diskominfo looks up.
//!
//! A code is eight Crockford base32 characters, shown as `XXXX-XXXX`:
//!
//! - the first five carry the minute the state began (minutes since
//!   2024-01-01 UTC, modulo 2^25: unambiguous for 63 years), so a lookup
//!   reads one minute of events, never a scan;
//! - the last three are 15 bits of SHA-256 over the OPD id (empty for the
//!   gateway), the state and the start time in milliseconds, which tell
//!   apart the events of one minute and catch most misheard characters.
//!
//! The code is computed, not stored: every event in `GET /api/v1/events`
//! carries its own (`reference`), and `GET /api/v1/references/{code}` finds
//! the event again. Reading is forgiving: case, hyphens and spaces do not
//! matter, and O/I/L are read as 0/1/1.

use chrono::{DateTime, TimeZone, Utc};
use sha2::{Digest, Sha256};

const ALPHABET: &[u8; 32] = b"0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/// 2024-01-01T00:00:00Z.
const EPOCH_S: i64 = 1_704_067_200;
const MINUTE_BITS: u32 = 25;
const CHECK_BITS: u32 = 15;
/// Characters of a code, without the hyphen.
pub const LEN: usize = 8;

/// What a code says: the minute its state began, and its check bits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    /// Start of the minute (UTC) in which the state began.
    pub minute: DateTime<Utc>,
    check: u32,
}

fn check_bits(opd: Option<&str>, state: &str, since: DateTime<Utc>) -> u32 {
    let mut h = Sha256::new();
    h.update(opd.unwrap_or("").as_bytes());
    h.update(b"|");
    h.update(state.as_bytes());
    h.update(b"|");
    h.update(since.timestamp_millis().to_be_bytes());
    let d = h.finalize();
    (u32::from(d[0]) << 8 | u32::from(d[1])) >> (16 - CHECK_BITS)
}

fn minute_number(t: DateTime<Utc>) -> u32 {
    ((t.timestamp() - EPOCH_S).div_euclid(60)).rem_euclid(1 << MINUTE_BITS) as u32
}

/// The code of the verdict `state` of `opd` (None: the gateway) that began
/// at `since`. Stable: the same event always has the same code.
pub fn code(opd: Option<&str>, state: &str, since: DateTime<Utc>) -> String {
    let value =
        u64::from(minute_number(since)) << CHECK_BITS | u64::from(check_bits(opd, state, since));
    let mut chars = [0u8; LEN];
    for (i, c) in chars.iter_mut().enumerate() {
        let shift = 5 * (LEN - 1 - i);
        *c = ALPHABET[((value >> shift) & 31) as usize];
    }
    let s = String::from_utf8_lossy(&chars).into_owned();
    format!("{}-{}", &s[..4], &s[4..])
}

/// Reads a code as a person typed it; the error says what is wrong.
pub fn decode(text: &str, now: DateTime<Utc>) -> Result<Decoded, String> {
    let shown: String = text.chars().take(24).collect();
    let mut value: u64 = 0;
    let mut n = 0;
    for ch in text.chars() {
        if ch == '-' || ch == ' ' {
            continue;
        }
        let v = match ch.to_ascii_uppercase() {
            'O' => 0,
            'I' | 'L' => 1,
            c => ALPHABET
                .iter()
                .position(|&a| a as char == c)
                .ok_or_else(|| {
                    format!("{ch:?} is not a character of a reference code (0-9 and A-Z without I, L, O, U)")
                })? as u64,
        };
        n += 1;
        if n > LEN {
            return Err(format!(
                "a reference code has {LEN} characters, like 0K3M-7QZD; {shown:?} has more"
            ));
        }
        value = value << 5 | v;
    }
    if n != LEN {
        return Err(format!(
            "a reference code has {LEN} characters, like 0K3M-7QZD; {shown:?} has {n}"
        ));
    }
    let minutes = (value >> CHECK_BITS) as i64;
    let check = (value & ((1 << CHECK_BITS) - 1)) as u32;
    // The latest minute with this number that is not in the future.
    let period = 1i64 << MINUTE_BITS;
    let now_minute = (now.timestamp() - EPOCH_S).div_euclid(60);
    let cycles = (now_minute - minutes).div_euclid(period);
    let minute = minutes + cycles.max(0) * period;
    let minute = Utc
        .timestamp_opt(EPOCH_S + 60 * minute, 0)
        .single()
        .ok_or_else(|| "the code names no valid time".to_string())?;
    Ok(Decoded { minute, check })
}

impl Decoded {
    /// Whether the verdict `state` of `opd` that began at `since` has this
    /// code.
    pub fn matches(&self, opd: Option<&str>, state: &str, since: DateTime<Utc>) -> bool {
        since.timestamp().div_euclid(60) == self.minute.timestamp().div_euclid(60)
            && check_bits(opd, state, since) == self.check
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn a_code_reads_back_to_its_minute_and_matches_only_its_event() {
        let since = t("2026-03-02T02:02:17.345Z");
        let c = code(Some("dinkes"), "local_fault", since);
        assert_eq!(c.len(), LEN + 1);
        assert_eq!(&c[4..5], "-");
        let d = decode(&c, t("2026-03-02T03:00:00Z")).unwrap();
        assert_eq!(d.minute, t("2026-03-02T02:02:00Z"));
        assert!(d.matches(Some("dinkes"), "local_fault", since));
        assert!(!d.matches(Some("bappeda"), "local_fault", since));
        assert!(!d.matches(Some("dinkes"), "healthy", since));
        assert!(!d.matches(None, "local_fault", since));
        assert!(!d.matches(
            Some("dinkes"),
            "local_fault",
            since + chrono::Duration::milliseconds(1)
        ));
        // Stable.
        assert_eq!(c, code(Some("dinkes"), "local_fault", since));
    }

    #[test]
    fn reading_forgives_case_hyphens_and_look_alike_letters() {
        let since = t("2026-03-02T02:02:17Z");
        let c = code(None, "upstream_down", since);
        let now = t("2026-03-03T00:00:00Z");
        let sloppy = c
            .to_lowercase()
            .replace('-', " ")
            .replace('0', "o")
            .replace('1', "l");
        assert_eq!(decode(&sloppy, now).unwrap(), decode(&c, now).unwrap());
        assert!(decode("ABC", now).unwrap_err().contains("8 characters"));
        assert!(
            decode("ABCD-EFGU", now)
                .unwrap_err()
                .contains("not a character")
        );
        assert!(decode("ABCD-EFGH-J", now).is_err());
        assert!(decode("", now).is_err());
        assert!(decode("ÄÄÄÄ-ÄÄÄÄ", now).is_err());
        let long = "A".repeat(100_000);
        let e = decode(&long, now).unwrap_err();
        assert!(e.contains("has more") && e.len() < 200, "{e}");
    }

    #[test]
    fn codes_of_different_events_differ() {
        let base = t("2026-03-02T02:02:00Z");
        let mut seen = std::collections::BTreeSet::new();
        for (i, opd) in ["a", "b", "c", "d", "e"].iter().enumerate() {
            for s in ["healthy", "local_fault", "idle"] {
                let since = base + chrono::Duration::milliseconds(1000 * i as i64 + 7);
                assert!(seen.insert(code(Some(opd), s, since)), "collision");
            }
        }
    }
}
