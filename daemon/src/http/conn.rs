//! What one HTTP connection may hold: a place under the listener's caps
//! (in all, and per source), and a deadline for silence.
//!
//! Every listener is reachable by hosts on the OPD LANs. A connection that
//! sends nothing holds a file descriptor; without these, a few thousand of
//! them would leave jatah unable to accept, to open the policy file on a
//! reload, or to re-attach an interface. So:
//! - a listener holds at most [`MAX_CONNECTIONS`] connections, and at most
//!   [`MAX_PER_SOURCE`] from one source (an IPv4 address, or an IPv6 /64,
//!   which one host can fill); a connection over either is closed at once;
//! - a connection with no request in flight that moves no byte either way
//!   for [`IDLE_TIMEOUT`] is closed, whatever phase it is in: before its
//!   first byte, while the protocol is detected, between keep-alive
//!   requests, or on an idle HTTP/2 connection.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Connections one listener holds at once.
pub const MAX_CONNECTIONS: usize = 2048;
/// Connections one source holds at once on one listener: a browser opens
/// about six, an office behind one NAT address some tens.
pub const MAX_PER_SOURCE: usize = 64;
/// A connection with nothing in flight that is silent this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(10);

/// The key a source's connections are counted under: the address, or for
/// IPv6 its /64 (one host may hold a whole /64).
fn source_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(std::net::Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The listener holds [`MAX_CONNECTIONS`].
    Full,
    /// The source holds [`MAX_PER_SOURCE`].
    Source,
}

/// The connections one listener holds, in all and per source.
#[derive(Debug)]
pub struct Caps {
    total: usize,
    per_source: usize,
    open: Mutex<HashMap<IpAddr, usize>>,
    count: AtomicUsize,
}

impl Caps {
    pub fn new(total: usize, per_source: usize) -> Arc<Caps> {
        Arc::new(Caps {
            total,
            per_source,
            open: Mutex::new(HashMap::new()),
            count: AtomicUsize::new(0),
        })
    }

    /// A place for a connection from `ip`, released when the returned
    /// guard drops.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<Slot, Refused> {
        let key = source_key(ip);
        let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        if self.count.load(Ordering::Relaxed) >= self.total {
            return Err(Refused::Full);
        }
        let n = open.entry(key).or_insert(0);
        if *n >= self.per_source {
            return Err(Refused::Source);
        }
        *n += 1;
        self.count.fetch_add(1, Ordering::Relaxed);
        Ok(Slot {
            caps: Arc::clone(self),
            key,
        })
    }

    /// Connections held now.
    pub fn open(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }
}

/// A connection's place under its listener's [`Caps`].
#[derive(Debug)]
pub struct Slot {
    caps: Arc<Caps>,
    key: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.caps.open.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = open.get_mut(&self.key) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.key);
            }
        }
        self.caps.count.fetch_sub(1, Ordering::Relaxed);
    }
}

/// When a connection last moved a byte, and how many of its requests are
/// being answered.
#[derive(Debug)]
pub struct Activity {
    start: Instant,
    /// Milliseconds after `start` of the last byte read or written.
    last_ms: AtomicU64,
    in_flight: AtomicUsize,
}

impl Activity {
    pub fn new() -> Arc<Activity> {
        Arc::new(Activity {
            start: Instant::now(),
            last_ms: AtomicU64::new(0),
            in_flight: AtomicUsize::new(0),
        })
    }

    fn touch(&self) {
        let ms = self.start.elapsed().as_millis() as u64;
        self.last_ms.store(ms, Ordering::Relaxed);
    }

    /// How long the connection has been silent with nothing in flight
    /// (zero while a request is being answered).
    pub fn idle_for(&self) -> Duration {
        if self.in_flight.load(Ordering::Relaxed) > 0 {
            return Duration::ZERO;
        }
        let last = Duration::from_millis(self.last_ms.load(Ordering::Relaxed));
        self.start.elapsed().saturating_sub(last)
    }

    /// Marks a request in flight until the guard drops.
    pub fn request(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(self))
    }
}

/// A request being answered (see [`Activity::request`]).
#[derive(Debug)]
pub struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.touch();
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that records its reads and writes in an [`Activity`].
#[derive(Debug)]
pub struct Watched<T> {
    inner: T,
    activity: Arc<Activity>,
}

impl<T> Watched<T> {
    pub fn new(inner: T, activity: Arc<Activity>) -> Self {
        Watched { inner, activity }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Watched<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.activity.touch();
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Watched<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.activity.touch();
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// Logs refusals at most once per `every`, with how many were refused
/// since the last line, so a flood of connections cannot flood the log.
#[derive(Debug)]
pub struct RefusalLog {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl RefusalLog {
    pub fn new(every: Duration) -> Self {
        RefusalLog {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// Counts a refusal; Some(refusals since the last line) when a line is
    /// due now.
    pub fn note(&self, now: Instant) -> Option<u64> {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        s.1 += 1;
        match s.0 {
            Some(t) if now.saturating_duration_since(t) < self.every => None,
            _ => {
                let n = s.1;
                *s = (Some(now), 0);
                Some(n)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_gets_its_share_and_the_listener_its_total() {
        let caps = Caps::new(5, 2);
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        let a1 = caps.admit(a).unwrap();
        let _a2 = caps.admit(a).unwrap();
        assert_eq!(caps.admit(a).unwrap_err(), Refused::Source);
        // Another source is not held back by the first.
        let _b1 = caps.admit(b).unwrap();
        drop(a1);
        let _a3 = caps.admit(a).unwrap();
        assert_eq!(caps.open(), 3);
        let _c: Vec<_> = ["10.0.0.3", "10.0.0.4"]
            .iter()
            .map(|ip| caps.admit(ip.parse().unwrap()).unwrap())
            .collect();
        assert_eq!(
            caps.admit("10.0.0.9".parse().unwrap()).unwrap_err(),
            Refused::Full
        );
    }

    #[test]
    fn an_ipv6_host_is_one_source_across_its_64() {
        let caps = Caps::new(100, 2);
        let _x = caps.admit("2001:db8:1:2::1".parse().unwrap()).unwrap();
        let _y = caps.admit("2001:db8:1:2::ffff:1".parse().unwrap()).unwrap();
        assert_eq!(
            caps.admit("2001:db8:1:2:abcd::9".parse().unwrap())
                .unwrap_err(),
            Refused::Source
        );
        // Another /64 is another source; a v4-mapped address is its v4.
        assert!(caps.admit("2001:db8:1:3::1".parse().unwrap()).is_ok());
        let _m = caps.admit("::ffff:10.0.0.1".parse().unwrap()).unwrap();
        let _v4 = caps.admit("10.0.0.1".parse().unwrap()).unwrap();
        assert_eq!(
            caps.admit("10.0.0.1".parse().unwrap()).unwrap_err(),
            Refused::Source
        );
    }

    #[test]
    fn places_come_back_when_connections_end() {
        let caps = Caps::new(1, 1);
        for _ in 0..3 {
            let s = caps.admit("10.0.0.1".parse().unwrap()).unwrap();
            assert_eq!(caps.open(), 1);
            drop(s);
        }
        assert_eq!(caps.open(), 0);
        assert!(caps.open.lock().unwrap().is_empty());
    }

    #[test]
    fn a_request_in_flight_is_never_idle() {
        let a = Activity::new();
        std::thread::sleep(Duration::from_millis(20));
        assert!(a.idle_for() >= Duration::from_millis(20));
        let r = a.request();
        assert_eq!(a.idle_for(), Duration::ZERO);
        drop(r);
        // Answering it was activity.
        assert!(a.idle_for() < Duration::from_millis(20));
    }

    #[test]
    fn refusals_are_logged_once_per_period_with_their_count() {
        let log = RefusalLog::new(Duration::from_secs(10));
        let t = Instant::now();
        assert_eq!(log.note(t), Some(1));
        assert_eq!(log.note(t + Duration::from_secs(1)), None);
        assert_eq!(log.note(t + Duration::from_secs(2)), None);
        assert_eq!(log.note(t + Duration::from_secs(11)), Some(3));
    }
}
