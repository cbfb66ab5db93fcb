//! Just enough DER to say in the log which certificate a listener serves:
//! the subject's common name, the DNS names and addresses of its
//! subjectAltName, and its validity period. Nothing here decides whether
//! the certificate is trusted (rustls and the client do that); a part that
//! does not parse is left out of the description.

use std::net::IpAddr;

use chrono::{DateTime, NaiveDate, Utc};

/// What a certificate says about itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Facts {
    /// The subject's CN, if it has one.
    pub common_name: Option<String>,
    /// Whether the certificate has a subjectAltName extension: clients
    /// check names there only (a CN alone satisfies none of them).
    pub has_alt_names: bool,
    /// dNSName entries of subjectAltName (`*.example.go.id` included).
    pub dns_names: Vec<String>,
    /// iPAddress entries of subjectAltName.
    pub addresses: Vec<IpAddr>,
    pub not_before: Option<DateTime<Utc>>,
    pub not_after: Option<DateTime<Utc>>,
}

/// One TLV from the front of `input`: (tag, contents), `input` advanced
/// past it. None on a high tag number, an indefinite or oversized length,
/// or truncation.
fn next<'a>(input: &mut &'a [u8]) -> Option<(u8, &'a [u8])> {
    let (&tag, rest) = input.split_first()?;
    if tag & 0x1f == 0x1f {
        return None;
    }
    let (&first, mut rest) = rest.split_first()?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |l, &b| (l << 8) | usize::from(b));
        rest = &rest[n..];
        len
    };
    if rest.len() < len {
        return None;
    }
    let (contents, after) = rest.split_at(len);
    *input = after;
    Some((tag, contents))
}

/// The next TLV if it has tag `want`.
fn expect<'a>(input: &mut &'a [u8], want: u8) -> Option<&'a [u8]> {
    match next(input)? {
        (tag, contents) if tag == want => Some(contents),
        _ => None,
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];

/// The facts of a DER certificate; None if it is not an X.509
/// certificate at all. Parts that do not parse are left empty.
pub fn facts(cert: &[u8]) -> Option<Facts> {
    let mut input = cert;
    let mut certificate = expect(&mut input, SEQUENCE)?;
    let mut tbs = expect(&mut certificate, SEQUENCE)?;
    let mut field = next(&mut tbs)?;
    if field.0 == 0xa0 {
        // [0] version
        field = next(&mut tbs)?;
    }
    if field.0 != 0x02 {
        // serialNumber
        return None;
    }
    let _signature = expect(&mut tbs, SEQUENCE)?;
    let _issuer = expect(&mut tbs, SEQUENCE)?;
    let mut validity = expect(&mut tbs, SEQUENCE)?;
    let subject = expect(&mut tbs, SEQUENCE)?;
    let _key = expect(&mut tbs, SEQUENCE)?;
    let mut f = Facts {
        common_name: common_name(subject),
        not_before: next(&mut validity).and_then(|(t, v)| time(t, v)),
        not_after: next(&mut validity).and_then(|(t, v)| time(t, v)),
        ..Facts::default()
    };
    // issuerUniqueID [1], subjectUniqueID [2], extensions [3].
    while let Some((tag, contents)) = next(&mut tbs) {
        if tag == 0xa3 {
            let mut c = contents;
            if let Some(exts) = expect(&mut c, SEQUENCE) {
                extensions(exts, &mut f);
            }
        }
    }
    Some(f)
}

fn common_name(mut name: &[u8]) -> Option<String> {
    while let Some(mut rdn) = expect(&mut name, SET) {
        while let Some(mut atv) = expect(&mut rdn, SEQUENCE) {
            if expect(&mut atv, OID)? == OID_COMMON_NAME {
                let (tag, value) = next(&mut atv)?;
                // UTF8String, PrintableString, IA5String, TeletexString.
                if matches!(tag, 0x0c | 0x13 | 0x16 | 0x14) {
                    return Some(String::from_utf8_lossy(value).into_owned());
                }
            }
        }
    }
    None
}

fn extensions(mut exts: &[u8], f: &mut Facts) {
    while let Some(mut ext) = expect(&mut exts, SEQUENCE) {
        let Some(oid) = expect(&mut ext, OID) else {
            continue;
        };
        if oid != OID_SUBJECT_ALT_NAME {
            continue;
        }
        f.has_alt_names = true;
        // critical BOOLEAN DEFAULT FALSE, then extnValue OCTET STRING.
        let mut value = match next(&mut ext) {
            Some((0x01, _)) => expect(&mut ext, 0x04),
            Some((0x04, v)) => Some(v),
            _ => None,
        }
        .unwrap_or_default();
        let Some(mut names) = expect(&mut value, SEQUENCE) else {
            continue;
        };
        while let Some((tag, v)) = next(&mut names) {
            match (tag, v.len()) {
                // dNSName [2] IA5String
                (0x82, _) => f.dns_names.push(String::from_utf8_lossy(v).into_owned()),
                // iPAddress [7] OCTET STRING
                (0x87, 4) => f.addresses.push(IpAddr::from(<[u8; 4]>::try_from(v).unwrap())),
                (0x87, 16) => f
                    .addresses
                    .push(IpAddr::from(<[u8; 16]>::try_from(v).unwrap())),
                _ => {}
            }
        }
    }
}

/// A UTCTime (YYMMDDHHMMSSZ, years 1950-2049) or GeneralizedTime
/// (YYYYMMDDHHMMSSZ), as X.509 uses them.
fn time(tag: u8, v: &[u8]) -> Option<DateTime<Utc>> {
    let s = std::str::from_utf8(v).ok()?.strip_suffix('Z')?;
    let (year, rest) = match (tag, s.len()) {
        (0x17, 12) => {
            let yy: i32 = s[..2].parse().ok()?;
            (if yy < 50 { 2000 + yy } else { 1900 + yy }, &s[2..])
        }
        (0x18, 14) => (s[..4].parse().ok()?, &s[4..]),
        _ => return None,
    };
    if !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let n = |i: usize| rest[i..i + 2].parse::<u32>().ok();
    let t = NaiveDate::from_ymd_opt(year, n(0)?, n(2)?)?.and_hms_opt(n(4)?, n(6)?, n(8)?)?;
    Some(t.and_utc())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_validity_are_read_from_a_certificate() {
        let mut params = rcgen::CertificateParams::new(vec![
            "status.example.go.id".to_string(),
            "*.example.go.id".to_string(),
            "203.0.113.7".to_string(),
            "2001:db8::7".to_string(),
        ])
        .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "jatah gateway");
        params.not_before = rcgen::date_time_ymd(2025, 1, 2);
        params.not_after = rcgen::date_time_ymd(2051, 3, 4);
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let f = facts(cert.der()).unwrap();
        assert_eq!(f.common_name.as_deref(), Some("jatah gateway"));
        assert!(f.has_alt_names);
        assert_eq!(f.dns_names, ["status.example.go.id", "*.example.go.id"]);
        assert_eq!(
            f.addresses,
            [
                "203.0.113.7".parse::<IpAddr>().unwrap(),
                "2001:db8::7".parse().unwrap()
            ]
        );
        assert_eq!(f.not_before.unwrap().to_rfc3339(), "2025-01-02T00:00:00+00:00");
        // After 2049 the time is a GeneralizedTime.
        assert_eq!(f.not_after.unwrap().to_rfc3339(), "2051-03-04T00:00:00+00:00");
    }

    #[test]
    fn utc_times_before_1950_and_after_2049_are_read_by_the_x509_rule() {
        assert_eq!(time(0x17, b"491231235959Z").unwrap().to_rfc3339(), "2049-12-31T23:59:59+00:00");
        assert_eq!(time(0x17, b"500101000000Z").unwrap().to_rfc3339(), "1950-01-01T00:00:00+00:00");
        assert_eq!(time(0x18, b"20991231000000Z").unwrap().to_rfc3339(), "2099-12-31T00:00:00+00:00");
        assert_eq!(time(0x17, b"4912312359Z"), None);
        assert_eq!(time(0x17, b"491332235959Z"), None);
    }

    #[test]
    fn what_is_not_a_certificate_has_no_facts() {
        assert_eq!(facts(b""), None);
        assert_eq!(facts(b"-----BEGIN CERTIFICATE-----"), None);
        assert_eq!(facts(&[0x30, 0x82, 0xff, 0xff, 0x30]), None);
        // Truncated anywhere: no panic.
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(vec!["a.example".to_string()]).unwrap();
        let der = params.self_signed(&key).unwrap().der().to_vec();
        for n in 0..der.len() {
            let _ = facts(&der[..n]);
        }
    }
}
