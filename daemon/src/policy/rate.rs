//! Rates in bits per second, written the way admins write them on MikroTik.
//!
//! Parsing is exact decimal arithmetic on integers: "1.5G" is exactly
//! 1 500 000 000 bit/s and a value finer than 1 bit/s is rejected rather than
//! rounded, so what the admin wrote is what the shaper enforces.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A rate in bits per second.
///
/// Displays in the shortest exact form with a decimal prefix ("20M", "1.5G",
/// "512k", "999"), which [`parse_rate`] reads back to the same value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Rate(pub u64);

impl Rate {
    /// The rate in bits per second.
    pub fn bits_per_second(self) -> u64 {
        self.0
    }

    /// The rate in bytes per second, rounded up so that a shaper configured
    /// in bytes never grants less than the policy says. This is jatah's one
    /// bits-to-bytes rule: the HTB classes and the metrics both convert
    /// through it.
    pub fn bytes_per_second(self) -> u64 {
        self.0.div_ceil(8)
    }
}

/// Decimal prefixes, largest first, as used by [`Rate`]'s `Display`.
const PREFIXES: [(u64, &str); 3] = [(1_000_000_000, "G"), (1_000_000, "M"), (1_000, "k")];

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bits = self.0;
        let Some(&(unit, prefix)) = PREFIXES.iter().find(|(unit, _)| bits >= *unit) else {
            return write!(f, "{bits}");
        };
        let whole = bits / unit;
        let rest = bits % unit;
        if rest == 0 {
            return write!(f, "{whole}{prefix}");
        }
        // Integer arithmetic only: print the remainder zero-padded to the
        // prefix's number of digits, then drop trailing zeros.
        let digits = unit.ilog10() as usize;
        let fraction = format!("{rest:0digits$}");
        write!(f, "{whole}.{}{prefix}", fraction.trim_end_matches('0'))
    }
}

impl FromStr for Rate {
    type Err = RateError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_rate(s)
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse_rate(&text).map_err(serde::de::Error::custom)
    }
}

/// Why a rate string was rejected. The `Display` text is written for the
/// admin editing the policy: it quotes the input and says what to write.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RateError {
    /// Nothing but whitespace.
    #[error("empty rate; write a rate in bits per second, e.g. \"10M\"")]
    Empty,
    /// A leading minus sign.
    #[error("\"{input}\": a rate cannot be negative; write e.g. \"10M\"")]
    Negative {
        /// The rejected text.
        input: String,
    },
    /// The value is zero.
    #[error(
        "\"{input}\": a rate must be greater than zero; HTB cannot shape to nothing, \
         so give at least a small rate such as \"64k\""
    )]
    Zero {
        /// The rejected text.
        input: String,
    },
    /// The number part is malformed.
    #[error(
        "\"{input}\": not a rate; write a number with an optional k, M or G prefix, \
         e.g. \"512k\", \"10M\", \"1.5G\" or \"100 Mbps\""
    )]
    InvalidNumber {
        /// The rejected text.
        input: String,
    },
    /// A decimal comma, as written in Indonesian.
    #[error("\"{input}\": use a decimal point, not a comma: write \"{suggestion}\"")]
    DecimalComma {
        /// The rejected text.
        input: String,
        /// The same rate with a decimal point.
        suggestion: String,
    },
    /// More decimals than 1 bit/s resolution.
    #[error(
        "\"{input}\": too precise; rates are whole bits per second, so this would be \
         a fraction of a bit per second"
    )]
    TooPrecise {
        /// The rejected text.
        input: String,
    },
    /// Larger than 2^64-1 bit/s.
    #[error("\"{input}\": too large for a rate")]
    TooLarge {
        /// The rejected text.
        input: String,
    },
    /// A byte unit such as "MB", "MB/s", "MBps" or "KB".
    #[error("\"{input}\": byte units are not accepted; rates are bits per second: {advice}")]
    ByteUnit {
        /// The rejected text.
        input: String,
        /// What to write instead, e.g. `write "80M"`.
        advice: String,
    },
    /// A binary prefix (Ki, Mi, Gi), with bits.
    #[error(
        "\"{input}\": binary prefixes (Ki, Mi, Gi) are not accepted; k, M and G are \
         powers of ten: {advice}"
    )]
    BinaryPrefix {
        /// The rejected text.
        input: String,
        /// What to write instead.
        advice: String,
    },
    /// A binary prefix with a byte unit, such as "GiB".
    #[error(
        "\"{input}\": byte units and binary prefixes are not accepted; rates are bits \
         per second and k, M and G are powers of ten: {advice}"
    )]
    BinaryByteUnit {
        /// The rejected text.
        input: String,
        /// What to write instead.
        advice: String,
    },
    /// Anything else after the number.
    #[error(
        "\"{input}\": unknown unit \"{unit}\"; write k, M or G (powers of ten), \
         optionally followed by bit, bps or bit/s, e.g. \"10M\" or \"100 Mbps\""
    )]
    UnknownUnit {
        /// The rejected text.
        input: String,
        /// The unrecognised unit.
        unit: String,
    },
}

/// An exact non-negative decimal: `mantissa / 10^scale`.
#[derive(Debug, Clone, Copy)]
struct Decimal {
    mantissa: u128,
    scale: u32,
}

impl Decimal {
    /// `self * factor` as a whole number, or `None` when the product has a
    /// fractional part or overflows.
    fn times(self, factor: u128) -> Option<Result<u64, Overflow>> {
        let Some(product) = self.mantissa.checked_mul(factor) else {
            return Some(Err(Overflow));
        };
        let divisor = 10u128.pow(self.scale);
        if product % divisor != 0 {
            return None;
        }
        Some(u64::try_from(product / divisor).map_err(|_| Overflow))
    }
}

#[derive(Debug, Clone, Copy)]
struct Overflow;

/// What the unit after the number means.
enum Unit {
    Bits(u128),
    Bytes(u128),
    BinaryBits(u128),
    BinaryBytes(u128),
    Unknown,
}

/// Parses a rate in bits per second: `"512k"`, `"10M"`, `"1.5G"`, `"10Mbit"`,
/// `"100 Mbps"`, `"300000000"`.
///
/// k, M and G are 10^3, 10^6 and 10^9 and are case-insensitive ("10mbit" is
/// 10 Mbit/s). The optional suffix is `bit`, `bits`, `bps`, `bit/s`, `b/s` or
/// `b` with a lowercase b. Byte units ("MB", "MB/s", "MBps", "KB", "GiB"),
/// binary prefixes ("Mibit"), zero, negative and fractional-bit rates are
/// rejected with a message that says what to write instead.
pub fn parse_rate(s: &str) -> Result<Rate, RateError> {
    let input = s.trim();
    if input.is_empty() {
        return Err(RateError::Empty);
    }
    let owned = || input.to_string();
    if input.starts_with('-') {
        return Err(RateError::Negative { input: owned() });
    }

    let number_len = input
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == ','))
        .unwrap_or(input.len());
    let (number, unit) = input.split_at(number_len);
    let unit = unit.trim_start();

    if number.contains(',') {
        // "1,5G" is the Indonesian way of writing 1.5G; say so rather than
        // calling it "not a rate". "1,000,000" is a thousands separator.
        let with_point = number.replacen(',', ".", 1);
        if !with_point.contains(',') && parse_decimal(&with_point).is_some() {
            return Err(RateError::DecimalComma {
                input: owned(),
                suggestion: format!("{with_point}{unit}"),
            });
        }
        return Err(RateError::InvalidNumber { input: owned() });
    }
    let Some(value) = parse_decimal(number) else {
        return Err(RateError::InvalidNumber { input: owned() });
    };

    let bits = |factor: u128| -> Result<u64, RateError> {
        match value.times(factor) {
            None => Err(RateError::TooPrecise { input: owned() }),
            Some(Err(Overflow)) => Err(RateError::TooLarge { input: owned() }),
            Some(Ok(bits)) => Ok(bits),
        }
    };
    // The advice for a rejected unit: the same rate in bits per second with
    // decimal prefixes, when it is a whole number of bits.
    let advice = |bits_factor: u128| match value.times(bits_factor) {
        Some(Ok(bits)) if bits > 0 => format!("write \"{}\"", Rate(bits)),
        _ => {
            "write the rate in bits per second with k, M or G, e.g. \"80M\" for 10 MB/s".to_string()
        }
    };

    let bits = match classify_unit(unit) {
        Unit::Bits(factor) => bits(factor)?,
        Unit::Bytes(factor) => {
            return Err(RateError::ByteUnit {
                input: owned(),
                advice: advice(factor * 8),
            });
        }
        Unit::BinaryBits(factor) => {
            return Err(RateError::BinaryPrefix {
                input: owned(),
                advice: advice(factor),
            });
        }
        Unit::BinaryBytes(factor) => {
            return Err(RateError::BinaryByteUnit {
                input: owned(),
                advice: advice(factor * 8),
            });
        }
        Unit::Unknown => {
            return Err(RateError::UnknownUnit {
                input: owned(),
                unit: unit.to_string(),
            });
        }
    };
    if bits == 0 {
        return Err(RateError::Zero { input: owned() });
    }
    Ok(Rate(bits))
}

/// Parses `digits[.digits]` exactly.
fn parse_decimal(number: &str) -> Option<Decimal> {
    let (whole, fraction) = match number.split_once('.') {
        Some((whole, fraction)) => (whole, fraction),
        None => (number, ""),
    };
    let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
        return None;
    }
    if number.ends_with('.') {
        return None;
    }
    // Trailing zeros in the fraction carry no precision; dropping them keeps
    // "1.50000000000G" valid.
    let fraction = fraction.trim_end_matches('0');
    let whole = whole.trim_start_matches('0');
    let digits = format!("{whole}{fraction}");
    let scale = u32::try_from(fraction.len()).ok()?;
    if scale > 30 || digits.len() > 38 {
        // Beyond u128; such a number is absurd for a rate anyway.
        return None;
    }
    let mantissa = if digits.is_empty() {
        0
    } else {
        digits.parse().ok()?
    };
    Some(Decimal { mantissa, scale })
}

/// Interprets the text after the number.
fn classify_unit(unit: &str) -> Unit {
    let (factor, binary_factor, suffix) = match unit.chars().next() {
        Some('k' | 'K') => (1_000, 1 << 10, &unit[1..]),
        Some('m' | 'M') => (1_000_000, 1 << 20, &unit[1..]),
        Some('g' | 'G') => (1_000_000_000, 1 << 30, &unit[1..]),
        _ => (1, 1, unit),
    };
    let (binary, suffix) = match suffix.strip_prefix(['i', 'I']) {
        Some(rest) if factor > 1 => (true, rest),
        _ => (false, suffix),
    };
    let kind = suffix_kind(suffix);
    match (kind, binary) {
        (Some(Suffix::Bits), false) => Unit::Bits(factor),
        (Some(Suffix::Bytes), false) => Unit::Bytes(factor),
        (Some(Suffix::Bits), true) => Unit::BinaryBits(binary_factor),
        (Some(Suffix::Bytes), true) => Unit::BinaryBytes(binary_factor),
        (None, _) => Unit::Unknown,
    }
}

enum Suffix {
    Bits,
    Bytes,
}

fn suffix_kind(suffix: &str) -> Option<Suffix> {
    // "bit" spelled out is unambiguous in any case; the abbreviations are
    // not: lowercase b is a bit, uppercase B a byte.
    const BIT_WORDS: [&str; 4] = ["bit", "bits", "bit/s", "bits/s"];
    const BIT_ABBREVIATIONS: [&str; 4] = ["", "b", "bps", "b/s"];
    if BIT_ABBREVIATIONS.contains(&suffix)
        || BIT_WORDS.iter().any(|w| w.eq_ignore_ascii_case(suffix))
    {
        return Some(Suffix::Bits);
    }
    let lower = suffix.to_ascii_lowercase();
    if suffix.starts_with('B') || lower.starts_with("byte") || lower.starts_with("octet") {
        return Some(Suffix::Bytes);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_rates() {
        let table: &[(&str, u64)] = &[
            ("512k", 512_000),
            ("512K", 512_000),
            ("10M", 10_000_000),
            ("10m", 10_000_000),
            ("1.5G", 1_500_000_000),
            ("1.5g", 1_500_000_000),
            ("10Mbit", 10_000_000),
            ("10mbit", 10_000_000),
            ("10MBit", 10_000_000),
            ("10Mbits", 10_000_000),
            ("100 Mbps", 100_000_000),
            ("100Mbps", 100_000_000),
            ("100Mbit/s", 100_000_000),
            ("100Mbits/s", 100_000_000),
            ("100Mb/s", 100_000_000),
            ("100Mb", 100_000_000),
            ("300000000", 300_000_000),
            ("300000000bps", 300_000_000),
            ("64 kbit", 64_000),
            ("1", 1),
            ("0.001k", 1),
            ("1.000000001G", 1_000_000_001),
            ("1.50000000000G", 1_500_000_000),
            ("007M", 7_000_000),
            ("  20M  ", 20_000_000),
            ("18446744073709551615", u64::MAX),
        ];
        for &(text, bits) in table {
            assert_eq!(parse_rate(text), Ok(Rate(bits)), "parsing {text:?}");
            assert_eq!(text.parse::<Rate>(), Ok(Rate(bits)), "FromStr {text:?}");
        }
    }

    #[test]
    fn invalid_rates() {
        // (input, distinctive part of the message)
        let table: &[(&str, &str)] = &[
            ("", "empty rate"),
            ("   ", "empty rate"),
            ("-10M", "\"-10M\": a rate cannot be negative"),
            ("0", "\"0\": a rate must be greater than zero"),
            ("0M", "must be greater than zero"),
            ("0.0G", "must be greater than zero"),
            (
                "10MB",
                "\"10MB\": byte units are not accepted; rates are bits per second: write \"80M\"",
            ),
            (
                "10MB/s",
                "byte units are not accepted; rates are bits per second: write \"80M\"",
            ),
            (
                "10MBps",
                "byte units are not accepted; rates are bits per second: write \"80M\"",
            ),
            ("10 MB/s", "write \"80M\""),
            ("512KB", "write \"4.096M\""),
            ("100B", "write \"800\""),
            ("1 byte/s", "write \"8\""),
            ("2 bytes", "byte units are not accepted"),
            (
                "1GiB",
                "byte units and binary prefixes are not accepted; rates are bits per second and \
                 k, M and G are powers of ten: write \"8.589934592G\"",
            ),
            (
                "10MiB",
                "byte units and binary prefixes are not accepted; rates are bits per second and \
                 k, M and G are powers of ten: write \"83.88608M\"",
            ),
            (
                "10Mibit",
                "binary prefixes (Ki, Mi, Gi) are not accepted; k, M and G are powers of ten: \
                 write \"10.48576M\"",
            ),
            ("1Kibps", "write \"1.024k\""),
            ("10X", "unknown unit \"X\""),
            ("10 T", "unknown unit \"T\""),
            ("10Mbit/h", "unknown unit \"Mbit/h\""),
            ("10 M bit", "unknown unit \"M bit\""),
            ("M", "\"M\": not a rate"),
            ("1.G", "not a rate"),
            (".5G", "not a rate"),
            ("1..5G", "not a rate"),
            ("+10M", "not a rate"),
            ("1e6", "unknown unit \"e6\""),
            ("1,5G", "use a decimal point, not a comma: write \"1.5G\""),
            ("1,000,000", "\"1,000,000\": not a rate"),
            ("1.5", "too precise"),
            ("0.0001k", "too precise"),
            ("1.0000000001G", "too precise"),
            ("18446744073709551616", "too large"),
            ("20000000000G", "too large"),
        ];
        for &(text, expected) in table {
            let error = parse_rate(text).expect_err(text).to_string();
            assert!(
                error.contains(expected),
                "parsing {text:?}: message {error:?} does not contain {expected:?}"
            );
        }
    }

    #[test]
    fn display_is_exact_and_short() {
        let table: &[(u64, &str)] = &[
            (1, "1"),
            (999, "999"),
            (1_000, "1k"),
            (1_500, "1.5k"),
            (512_000, "512k"),
            (999_999, "999.999k"),
            (1_000_000, "1M"),
            (20_000_000, "20M"),
            (300_000_000, "300M"),
            (1_234_567, "1.234567M"),
            (1_500_000_000, "1.5G"),
            (1_000_000_001, "1.000000001G"),
            (10_000_000_000, "10G"),
            (u64::MAX, "18446744073.709551615G"),
        ];
        for &(bits, text) in table {
            assert_eq!(Rate(bits).to_string(), text);
            assert_eq!(parse_rate(text), Ok(Rate(bits)), "round trip of {text}");
        }
    }

    #[test]
    fn display_round_trips() {
        // A spread of awkward values, including every prefix boundary.
        let mut values = vec![u64::MAX, u64::MAX - 1];
        for exponent in 0..19 {
            let power = 10u64.pow(exponent);
            values.extend([
                power,
                power + 1,
                power.saturating_sub(1).max(1),
                power * 7 / 3 + 1,
            ]);
        }
        for bits in values {
            let text = Rate(bits).to_string();
            assert_eq!(parse_rate(&text), Ok(Rate(bits)), "round trip of {text}");
        }
    }

    #[test]
    fn bytes_round_up() {
        assert_eq!(Rate(8).bytes_per_second(), 1);
        assert_eq!(Rate(9).bytes_per_second(), 2);
        assert_eq!(Rate(1).bytes_per_second(), 1);
        assert_eq!(Rate(300_000_000).bytes_per_second(), 37_500_000);
        assert_eq!(Rate(u64::MAX).bytes_per_second(), u64::MAX / 8 + 1);
        assert_eq!(Rate(300_000_000).bits_per_second(), 300_000_000);
    }

    #[test]
    fn ordering_and_serde() {
        assert!(Rate(10_000_000) < Rate(20_000_000));
        assert_eq!(
            serde_json::to_string(&Rate(1_500_000_000)).unwrap(),
            "\"1.5G\""
        );
        let back: Rate = serde_json::from_str("\"100 Mbps\"").unwrap();
        assert_eq!(back, Rate(100_000_000));
        assert!(serde_json::from_str::<Rate>("\"10MB\"").is_err());
    }
}
