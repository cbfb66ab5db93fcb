//! Running a classifier once on a crafted frame (BPF_PROG_TEST_RUN), for
//! the tests and benchmarks only.

use super::{Datapath, DatapathError, prog_err};

/// The `__sk_buff` fields jatah's tests set and read back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SkbContext {
    pub mark: u32,
    pub priority: u32,
    /// The interface a packet arrived on; 0 for one the host itself sent.
    pub ingress_ifindex: u32,
    pub ifindex: u32,
    pub gso_segs: u32,
    pub gso_size: u32,
}

/// sizeof(struct __sk_buff) on this kernel ABI.
const SKB_CTX_LEN: usize = std::mem::size_of::<aya_sk_buff::SkBuff>();

mod aya_sk_buff {
    /// Mirror of the UAPI `struct __sk_buff` (stable ABI), for
    /// BPF_PROG_TEST_RUN's ctx_in/ctx_out.
    #[repr(C)]
    #[derive(Default, Clone, Copy)]
    pub struct SkBuff {
        pub len: u32,
        pub pkt_type: u32,
        pub mark: u32,
        pub queue_mapping: u32,
        pub protocol: u32,
        pub vlan_present: u32,
        pub vlan_tci: u32,
        pub vlan_proto: u32,
        pub priority: u32,
        pub ingress_ifindex: u32,
        pub ifindex: u32,
        pub tc_index: u32,
        pub cb: [u32; 5],
        pub hash: u32,
        pub tc_classid: u32,
        pub data: u32,
        pub data_end: u32,
        pub napi_id: u32,
        pub family: u32,
        pub remote_ip4: u32,
        pub local_ip4: u32,
        pub remote_ip6: [u32; 4],
        pub local_ip6: [u32; 4],
        pub remote_port: u32,
        pub local_port: u32,
        pub data_meta: u32,
        pub flow_keys: u64,
        pub tstamp: u64,
        pub wire_len: u32,
        pub gso_segs: u32,
        pub sk: u64,
        pub gso_size: u32,
        pub tstamp_type: u8,
        pub _pad: [u8; 3],
        pub hwtstamp: u64,
    }
}

impl SkbContext {
    /// A packet that arrived on an interface (ingress ifindex 1), as every
    /// packet the gateway forwards is.
    pub fn forwarded() -> Self {
        SkbContext {
            ingress_ifindex: 1,
            ..Default::default()
        }
    }

    fn to_bytes(self) -> [u8; SKB_CTX_LEN] {
        let skb = aya_sk_buff::SkBuff {
            mark: self.mark,
            priority: self.priority,
            ingress_ifindex: self.ingress_ifindex,
            ifindex: self.ifindex,
            gso_segs: self.gso_segs,
            gso_size: self.gso_size,
            ..Default::default()
        };
        // SAFETY: SkBuff is repr(C) plain data of exactly SKB_CTX_LEN bytes.
        unsafe { std::mem::transmute::<aya_sk_buff::SkBuff, [u8; SKB_CTX_LEN]>(skb) }
    }

    fn from_bytes(b: &[u8; SKB_CTX_LEN]) -> Self {
        // SAFETY: any bit pattern is a valid SkBuff (integers only).
        let skb: aya_sk_buff::SkBuff = unsafe { std::ptr::read_unaligned(b.as_ptr().cast()) };
        SkbContext {
            mark: skb.mark,
            priority: skb.priority,
            ingress_ifindex: skb.ingress_ifindex,
            ifindex: skb.ifindex,
            gso_segs: skb.gso_segs,
            gso_size: skb.gso_size,
        }
    }
}

impl Datapath {
    /// Runs a classifier once on a crafted frame with BPF_PROG_TEST_RUN.
    /// Returns the program's return value and the `__sk_buff` it left.
    pub fn test_run(
        &self,
        prog: &str,
        frame: &[u8],
        ctx: &SkbContext,
        repeat: u32,
    ) -> Result<(i32, SkbContext, std::time::Duration), DatapathError> {
        use aya::programs::{TestRun, TestRunOptions};
        let p = self.classifier(prog)?;
        let ctx_in = ctx.to_bytes();
        let mut ctx_out = [0u8; SKB_CTX_LEN];
        let mut data_out = vec![0u8; frame.len() + 256];
        let mut opts = TestRunOptions::new();
        opts.data_in = Some(frame);
        opts.data_out = Some(&mut data_out);
        opts.ctx_in = Some(&ctx_in);
        opts.ctx_out = Some(&mut ctx_out);
        opts.repeat = repeat.max(1);
        let r = p
            .test_run(opts)
            .map_err(prog_err(format!("BPF_PROG_TEST_RUN of {prog}")))?;
        Ok((
            r.return_value as i32,
            SkbContext::from_bytes(&ctx_out),
            r.duration,
        ))
    }
}
