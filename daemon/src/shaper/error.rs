//! Errors of the shaper. Each names the interface and the operation, so a
//! log line alone says what failed where and why.

use std::fmt;
use std::io;

/// Why a shaper operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ShaperError {
    /// The rtnetlink socket could not be opened or configured.
    #[error("cannot open an rtnetlink socket: {0}")]
    Socket(#[source] io::Error),

    /// The kernel refused an operation.
    #[error("{op} on ifindex {ifindex} failed: {}{}", io::Error::from_raw_os_error(*errno), KernelSays(message.as_deref()))]
    Kernel {
        /// Interface the operation was for.
        ifindex: u32,
        /// What was attempted, e.g. "create class 1:11 (minor 17)".
        op: String,
        /// The (positive) errno the kernel returned.
        errno: i32,
        /// The kernel's extended-ack explanation, when it gave one.
        message: Option<String>,
    },

    /// Sending to or receiving from the kernel failed, or the reply did not
    /// parse.
    #[error("{op} on ifindex {ifindex}: {detail}")]
    Transport {
        /// Interface the operation was for.
        ifindex: u32,
        /// What was attempted.
        op: String,
        /// What went wrong on the socket.
        detail: String,
    },

    /// The tree asked for cannot be installed (nothing was changed).
    #[error("invalid HTB tree for ifindex {ifindex}: {reason}")]
    InvalidTree {
        /// Interface the tree was meant for.
        ifindex: u32,
        /// What is wrong with it.
        reason: String,
    },

    /// The interface has no jatah root qdisc (htb 1:).
    #[error("jatah's HTB qdisc (htb 1:) is not installed on ifindex {ifindex}")]
    NotInstalled {
        /// The interface.
        ifindex: u32,
    },
}

impl ShaperError {
    /// The errno of a kernel refusal (e.g. `libc::ENODEV` when the interface
    /// does not exist).
    #[cfg(any(test, feature = "testkit"))]
    pub fn errno(&self) -> Option<i32> {
        match self {
            ShaperError::Kernel { errno, .. } => Some(*errno),
            ShaperError::Socket(e) => e.raw_os_error(),
            _ => None,
        }
    }

    /// The kernel's extended-ack message, if any.
    #[cfg(any(test, feature = "testkit"))]
    pub fn kernel_message(&self) -> Option<&str> {
        match self {
            ShaperError::Kernel { message, .. } => message.as_deref(),
            _ => None,
        }
    }
}

/// Formats ": kernel says: ..." after the errno, or nothing.
struct KernelSays<'a>(Option<&'a str>);

impl fmt::Display for KernelSays<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(msg) => write!(f, "; kernel says: {msg}"),
            None => Ok(()),
        }
    }
}
