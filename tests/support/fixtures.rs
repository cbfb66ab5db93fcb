//! Labs several test files build the same way.

use jatah::lab::{LabOpd, LabSpec};

/// Dinas Sosial (guaranteed 5M, ceiling 10M each way), the OPD tests hold
/// at its ceiling or break, and BPBD (5M..50M) beside it.
pub fn dinsos_and_bpbd() -> Vec<LabOpd> {
    vec![
        LabOpd::new("dinsos", "Dinas Sosial", ("5M", "10M"), ("5M", "10M")),
        LabOpd::new("bpbd", "BPBD", ("5M", "50M"), ("5M", "50M")),
    ]
}

/// [`dinsos_and_bpbd`] behind a 100/100 Mbit/s uplink, 1500-byte MTU,
/// masquerading on the WAN side when `nat` is set.
pub fn dinsos_and_bpbd_lab(prefix: &str, nat: bool) -> LabSpec {
    LabSpec {
        prefix: prefix.into(),
        download: "100M".into(),
        upload: "100M".into(),
        nat,
        mtu: 1500,
        opds: dinsos_and_bpbd(),
    }
}

/// The diagnosis labs' four OPDs (5M guaranteed, 10M ceiling download;
/// 2M..5M upload) behind a 40/20 Mbit/s uplink, with NAT.
pub const DIAGNOSIS_OPDS: [&str; 4] = ["dinkes", "disdik", "bappeda", "kec-waru"];

/// The lab tests/diagnosis.rs and tests/capacity.rs build: see
/// [`DIAGNOSIS_OPDS`].
pub fn diagnosis_lab(prefix: &str) -> LabSpec {
    LabSpec {
        prefix: prefix.into(),
        download: "40M".into(),
        upload: "20M".into(),
        nat: true,
        mtu: 1500,
        opds: DIAGNOSIS_OPDS
            .iter()
            .map(|id| LabOpd::new(id, id, ("5M", "10M"), ("2M", "5M")))
            .collect(),
    }
}
