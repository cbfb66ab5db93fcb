//! `jatah down` refusing what it must not touch, without root or a
//! kernel: a running jatah's lock, a --bpffs that is not a bpffs.

use std::fs;
use std::path::PathBuf;

use super::down_in;

const POLICY: &str = "[gateway]\nwan = \"jtdown0\"\nlan = [\"jtdown1\"]\n\
    download = \"100M\"\nupload = \"100M\"\n\n[[opd]]\nid = \"dinkes\"\n\
    name = \"Dinas Kesehatan\"\nsubnets = [\"10.20.1.0/24\"]\n\
    download = { guaranteed = \"20M\", ceiling = \"30M\" }\n\
    upload = { guaranteed = \"1M\", ceiling = \"5M\" }\n";

/// A scratch directory with a policy, a run directory and a would-be
/// bpffs holding what looks like jatah's pins.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!(
            "jatah-down-{name}-{}",
            crate::lab::netns::unique_token()
        ));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bpffs/jatah/v1")).unwrap();
        fs::write(dir.join("bpffs/jatah/v1/jatah_counters"), "").unwrap();
        fs::write(dir.join("policy.toml"), POLICY).unwrap();
        Scratch(dir)
    }

    fn down(&self, bpffs: &str) -> String {
        let err = down_in(
            &self.0.join("policy.toml"),
            &self.0.join(bpffs),
            &self.0.join("run"),
        )
        .expect_err("down refused");
        format!("{err:#}")
    }

    fn pins_left(&self) -> bool {
        self.0.join("bpffs/jatah/v1/jatah_counters").exists()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

#[test]
fn down_refuses_while_a_jatah_runs_and_names_its_pid() {
    let s = Scratch::new("running");
    let running = crate::runtime::instance::acquire(&s.0.join("run")).unwrap();
    let err = s.down("bpffs");
    let pid = std::process::id();
    assert!(
        err.starts_with(&format!(
            "a jatah is running (pid {pid}); stop it first: systemctl stop jatah"
        )),
        "{err}"
    );
    assert!(err.contains("Nothing was removed"), "{err}");
    assert!(s.pins_left(), "nothing removed");
    // The running jatah's lock is untouched: still held, still its pid.
    let again = crate::runtime::instance::acquire(&s.0.join("run")).unwrap_err();
    assert!(again.contains(&format!("pid {pid}")), "{again}");
    drop(running);
}

#[test]
fn down_refuses_a_bpffs_path_that_is_not_one_and_says_what_it_is() {
    let s = Scratch::new("notbpffs");
    let err = s.down("bpffs");
    let path = s.0.join("bpffs").display().to_string();
    assert!(
        err.starts_with(&format!("{path} is not a bpffs mount (it is on ")),
        "{err}"
    );
    assert!(err.contains("nothing was removed"), "{err}");
    assert!(s.pins_left(), "the directory's contents stay");

    let err = s.down("nowhere");
    assert!(err.contains("(it does not exist)"), "{err}");
    // Down let go of the lock: a jatah may start afterwards.
    drop(crate::runtime::instance::acquire(&s.0.join("run")).unwrap());
}
