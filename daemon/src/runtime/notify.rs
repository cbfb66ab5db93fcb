//! Telling systemd how the daemon is doing (`Type=notify`): READY once
//! the data path is attached, STATUS lines a `systemctl status` shows,
//! STOPPING on the way out. Without `$NOTIFY_SOCKET` (not under systemd,
//! or another `Type=`) nothing is sent.

use std::os::unix::net::UnixDatagram;

use tracing::{debug, warn};

/// Sends `message` (newline-separated `KEY=value` lines) to the service
/// manager, if there is one. Failures are logged, never fatal: shaping
/// does not depend on systemd hearing of it.
pub fn notify(message: &str) {
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return;
    };
    let sent = UnixDatagram::unbound().and_then(|sock| {
        let bytes = path.as_encoded_bytes();
        match bytes.strip_prefix(b"@") {
            // An abstract socket (systemd's usual one).
            Some(name) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                sock.send_to_addr(message.as_bytes(), &addr)
            }
            None => sock.send_to(message.as_bytes(), &path),
        }
    });
    match sent {
        Ok(_) => debug!(message, "told the service manager"),
        Err(e) => warn!(
            socket = %path.to_string_lossy(),
            error = %e,
            "cannot notify the service manager"
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_message_reaches_a_socket_named_by_path() {
        let dir = std::env::temp_dir().join(format!("jatah-notify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("notify.sock");
        let _ = std::fs::remove_file(&path);
        let listener = UnixDatagram::bind(&path).unwrap();
        // SAFETY: this test is the only one that reads or sets the variable.
        unsafe { std::env::set_var("NOTIFY_SOCKET", &path) };
        notify("READY=1\nSTATUS=shaping");
        unsafe { std::env::remove_var("NOTIFY_SOCKET") };
        let mut buf = [0u8; 64];
        listener
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let n = listener.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"READY=1\nSTATUS=shaping");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
