//! `loop`: detects a forwarding loop at start-up and ends the process, as CoreDNS's
//! plugin of that name does (README.md beside this file). The folder is `loop_detect`
//! because `loop` is a Rust keyword; the directive is `loop`.
//!
//! ```text
//!   start ──▶ probe thread: HINFO <random>.<random>.<zone> ──UDP──▶ our own listener
//!               retry every second for up to 30 s          │
//!               until a reply comes back; 2 s later: off   ▼
//!                                                 serve (every worker): that exact
//!                                                 HINFO seen a third time?
//!                                                 ──▶ [FATAL] plugin/loop: Loop (…) detected …, exit 1
//! ```
//!
//! The probe's own visit counts once; a forward plugin that sends it back to us makes
//! the second and third. Any other query passes at the cost of one comparison.

use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use parking_lot::Mutex;

use crate::chain::{Handler, Query, Rng, Step};
use crate::config::{ConfigError, Directive};
use crate::dns::{Header, QueryBuilder, Request, Zone, rtype, wire};
use crate::plugin::once;
use crate::setup::{AttachCtx, Lifecycle, Plugin, SetupCtx};

/// The directive name, and the prefix of its errors.
const NAME: &str = "loop";

/// How many sightings of the probe are normal: its own arrival, and one more (CoreDNS
/// fires on the third).
const SIGHTINGS_ALLOWED: u32 = 2;

/// The plugin: the probe name, where to send it, and what has been seen of it.
pub struct Loop {
    /// The block's first zone (`.`, `example.org.`).
    zone: Zone,
    probe: Probe,
    /// The block's first `bind` address: where the probe goes (127.0.0.1 without one).
    bind: Option<IpAddr>,
    timing: Timing,
    /// Shared with the probe thread.
    state: Arc<State>,
    /// The port and the listen address as CoreDNS prints it, learnt at `attach`.
    listen: OnceLock<Listen>,
    prober: Mutex<Option<Prober>>,
}

/// `<random>.<random>.<zone>`, as text for the message and as the lookup key.
struct Probe {
    text: String,
    /// Lower-cased wire form, as [`Request::qname`] holds names; empty when the zone
    /// is too long to hold the two labels in front of it (255 bytes at most).
    key: Box<[u8]>,
}

/// What the workers and the probe thread share.
#[derive(Default)]
struct State {
    /// Sightings of the probe query.
    seen: AtomicU32,
    /// Set once probing is over: from then on nothing is counted.
    off: AtomicBool,
}

/// Where the block listens.
#[derive(Debug, PartialEq, Eq)]
struct Listen {
    port: u16,
    /// `host:port` as Go's `net.JoinHostPort` writes the first listen host: `:53`
    /// without `bind`, `10.0.0.1:53` or `[::1]:53` with one.
    label: String,
}

/// CoreDNS's timings; shorter in tests.
#[derive(Clone, Copy, Debug)]
struct Timing {
    /// How long to keep trying to get the probe through.
    window: Duration,
    /// The pause after a failed attempt.
    retry: Duration,
    /// How long to wait for the probe's reply (miekg/dns's default exchange timeout).
    reply_timeout: Duration,
    /// How long to keep counting after the probe's reply came back.
    disarm_after: Duration,
}

impl Timing {
    const COREDNS: Timing = Timing {
        window: Duration::from_secs(30),
        retry: Duration::from_secs(1),
        reply_timeout: Duration::from_secs(2),
        disarm_after: Duration::from_secs(2),
    };
}

/// The handle on a running probe thread: dropping `stop` ends it.
struct Prober {
    stop: Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

/// `loop`: no arguments, no options, once per server block.
pub fn setup(dirs: &[&Directive], ctx: &SetupCtx<'_>) -> Result<Plugin, ConfigError> {
    let d = once(NAME, dirs)?;
    d.expect_args(NAME, 0, 0)?;
    d.expect_no_block(NAME)?;
    let zone = ctx.zones.first().cloned().unwrap_or_else(Zone::root);
    let bind = ctx.binds.and_then(|b| b.first().copied());
    Ok(Plugin::both(Arc::new(Loop::new(zone, bind, Timing::COREDNS))))
}

impl Probe {
    /// A fresh random name under `zone` (two non-negative 63-bit numbers, as Go's
    /// `rand.Int` gives CoreDNS).
    fn new(zone: &Zone) -> Probe {
        let (a, b) = (Rng::secure_u64() >> 1, Rng::secure_u64() >> 1);
        Probe::under(zone, a, b)
    }

    fn under(zone: &Zone, a: u64, b: u64) -> Probe {
        let text = if zone.is_root() {
            format!("{a}.{b}.")
        } else {
            format!("{a}.{b}.{zone}")
        };
        // Digits in front of a zone: a valid name unless it grows past 255 bytes; then
        // the key is empty, never matches, and no probe is sent.
        let key = wire::name_from_str(&text).unwrap_or_default().into_boxed_slice();
        Probe { text, key }
    }

    /// The query CoreDNS sends (miekg/dns `SetQuestion`: RD set, one question, no EDNS).
    fn query(&self, id: u16) -> Vec<u8> {
        QueryBuilder::new(&self.key, rtype::HINFO).id(id).to_vec()
    }
}

impl Listen {
    /// From a route's `server` label (`dns://:53`, `dns://10.0.0.1:53`,
    /// `dns://[::1]:53`): its port; the label is rebuilt from the block's first bind.
    fn from_route(server: &str, bind: Option<IpAddr>) -> Option<Listen> {
        let (_, port) = server.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        let label = match bind {
            Some(ip) => SocketAddr::new(ip, port).to_string(),
            None => format!(":{port}"),
        };
        Some(Listen { port, label })
    }
}

/// What [`Loop::observe`] made of a query.
#[derive(Debug, PartialEq)]
enum Sighting {
    /// Not the probe (or probing is over).
    Other,
    /// The probe, seen no more than CoreDNS allows.
    Probe,
    /// The probe once too often: the fatal message.
    Loop(String),
}

impl Loop {
    fn new(zone: Zone, bind: Option<IpAddr>, timing: Timing) -> Loop {
        Loop {
            probe: Probe::new(&zone),
            zone,
            bind,
            timing,
            state: Arc::default(),
            listen: OnceLock::new(),
            prober: Mutex::new(None),
        }
    }

    /// Counts `req` if it is the probe; a loop once it has been seen more than twice
    /// (with CoreDNS's wording).
    fn observe(&self, req: &Request<'_>) -> Sighting {
        if req.qtype != rtype::HINFO || self.state.off.load(Ordering::Relaxed) {
            return Sighting::Other;
        }
        if req.qname.wire() != &*self.probe.key {
            return Sighting::Other;
        }
        let seen = self.state.seen.fetch_add(1, Ordering::Relaxed) + 1;
        if seen <= SIGHTINGS_ALLOWED {
            return Sighting::Probe;
        }
        let listen = self.listen.get().map_or("", |l| l.label.as_str());
        Sighting::Loop(format!(
            "Loop ({} -> {listen}) detected for zone \"{}\", see https://coredns.io/plugins/loop#troubleshooting. Query: \"HINFO {}\"",
            req.client, self.zone, self.probe.text
        ))
    }

    /// Where the probe goes: the first bind address, or 127.0.0.1, on the block's port.
    fn target(&self) -> Option<SocketAddr> {
        let port = self.listen.get()?.port;
        Some(SocketAddr::new(
            self.bind.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            port,
        ))
    }
}

/// Prints CoreDNS's fatal line and ends the process with status 1. The line goes to
/// standard output, where the log goes, with CoreDNS's `[FATAL]` level (which the
/// `log` crate does not have). Only the first worker to get here prints.
fn die(message: &str) -> ! {
    static DYING: AtomicBool = AtomicBool::new(false);
    if !DYING.swap(true, Ordering::SeqCst) {
        let mut out = std::io::stdout().lock();
        let _ = writeln!(out, "[FATAL] plugin/{NAME}: {message}");
        let _ = out.flush();
        drop(out);
        std::process::exit(1);
    }
    // Another worker is already ending the process.
    loop {
        std::thread::park();
    }
}

impl Handler for Loop {
    fn name(&self) -> &'static str {
        NAME
    }

    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        match self.observe(q.req) {
            Sighting::Loop(message) => die(&message),
            Sighting::Probe => q.coalesce = false,
            Sighting::Other => {}
        }
        Step::Next
    }
}

impl Lifecycle for Loop {
    /// Learns the block's port (the route of the block's first zone, else the first
    /// route): the server-block config CoreDNS reads it from is not in [`SetupCtx`].
    fn attach(&self, block: &AttachCtx<'_>) {
        let routes = block.routes;
        let route = routes
            .iter()
            .find(|r| *r.zone == *self.zone.as_str())
            .or(routes.first());
        if let Some(listen) = route.and_then(|r| Listen::from_route(&r.server, self.bind)) {
            let _ = self.listen.set(listen);
        }
    }

    /// Starts the probe thread (CoreDNS's `OnStartup`).
    fn start(&self) {
        let mut prober = self.prober.lock();
        if prober.is_some() || self.state.off.load(Ordering::Relaxed) {
            return;
        }
        let Some(target) = self.target().filter(|_| !self.probe.key.is_empty()) else {
            // Not attached to a listener, or no probe name fits under the zone:
            // nothing to probe.
            self.state.off.store(true, Ordering::Relaxed);
            return;
        };
        let query = self.probe.query((Rng::secure_u64() & 0xFFFF) as u16);
        let (stop, stopped) = crossbeam_channel::bounded::<()>(0);
        let state = Arc::clone(&self.state);
        let timing = self.timing;
        let spawned = std::thread::Builder::new()
            .name("loop-probe".into())
            .spawn(move || probe(target, &query, &state, timing, &stopped));
        match spawned {
            Ok(thread) => *prober = Some(Prober { stop, thread }),
            Err(e) => {
                log::error!(target: "plugin/loop", "cannot start the probe thread: {e}");
                self.state.off.store(true, Ordering::Relaxed);
            }
        }
    }

    /// Ends the probe thread (dropping the sender wakes it) and stops counting.
    fn stop(&self) {
        if let Some(Prober { stop, thread }) = self.prober.lock().take() {
            drop(stop);
            let _ = thread.join();
        }
        self.state.off.store(true, Ordering::Relaxed);
    }
}

/// Why an attempt did not get the probe through.
#[derive(Debug)]
enum ProbeError {
    /// The plugin is being stopped.
    Stopped,
    /// No reply in time.
    Timeout,
    Io(std::io::Error),
}

impl std::fmt::Display for ProbeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ProbeError::Stopped => f.write_str("stopped"),
            ProbeError::Timeout => f.write_str("no reply in time"),
            ProbeError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// The probe thread: CoreDNS's start-up loop. Tries until a reply comes back (after a
/// failure the count starts again, as CoreDNS's `reset`), keeps counting a little
/// longer, then turns counting off for good.
fn probe(target: SocketAddr, query: &[u8], state: &State, timing: Timing, stopped: &Receiver<()>) {
    let deadline = Instant::now() + timing.window;
    while Instant::now() < deadline {
        match exchange(target, query, timing.reply_timeout, stopped) {
            Ok(()) => {
                let _ = stopped.recv_timeout(timing.disarm_after);
                break;
            }
            Err(ProbeError::Stopped) => break,
            Err(e) => {
                log::debug!(target: "plugin/loop", "probe to {target} failed: {e}");
                state.seen.store(0, Ordering::Relaxed);
                if !matches!(stopped.recv_timeout(timing.retry), Err(RecvTimeoutError::Timeout)) {
                    break;
                }
            }
        }
    }
    state.off.store(true, Ordering::Relaxed);
}

/// Sends `query` over UDP and waits up to `timeout` for a reply with its ID (the
/// reply itself is not looked at), checking for `stopped` every 100 ms.
fn exchange(target: SocketAddr, query: &[u8], timeout: Duration, stopped: &Receiver<()>) -> Result<(), ProbeError> {
    let id = Header::of(query).map_or(0, |h| h.id());
    let local: SocketAddr = match target {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).map_err(ProbeError::Io)?;
    socket.connect(target).map_err(ProbeError::Io)?;
    socket.send(query).map_err(ProbeError::Io)?;
    socket
        .set_read_timeout(Some(Duration::from_millis(100)))
        .map_err(ProbeError::Io)?;
    let deadline = Instant::now() + timeout;
    let mut buf = [0u8; 512];
    loop {
        if let Err(TryRecvError::Disconnected) = stopped.try_recv() {
            return Err(ProbeError::Stopped);
        }
        if Instant::now() >= deadline {
            return Err(ProbeError::Timeout);
        }
        match socket.recv(&mut buf) {
            Ok(n) if Header::of(&buf[..n]).is_some_and(|h| h.answers(id)) => return Ok(()),
            Ok(_) => {}
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(ProbeError::Io(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::chain::RouteTag;

    fn zone_of(text: &str) -> Zone {
        Zone::new(text).unwrap()
    }
    use crate::dns::Transport;

    fn setup_in(corefile: &str, binds: Option<&[IpAddr]>) -> Result<Plugin, ConfigError> {
        let parsed = crate::config::parse_str(corefile, "Corefile", Path::new("/nonexistent"))?;
        let dirs: Vec<&Directive> = parsed.blocks[0]
            .directives
            .iter()
            .filter(|d| d.name.text == NAME)
            .collect();
        let zones = [Zone::new("example.org.").unwrap(), Zone::new("example.net.").unwrap()];
        let ctx = SetupCtx {
            zones: &zones,
            config_dir: "/nonexistent".into(),
            workers: 1,
            binds,
            process: &crate::process::ProcessState::new(),
        };
        setup(&dirs, &ctx)
    }

    fn error(corefile: &str) -> String {
        match setup_in(corefile, None) {
            Ok(_) => panic!("no error for {corefile}"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn setup_takes_no_arguments_once_per_block() {
        setup_in("example.org {\n    loop\n}\n", None).unwrap();
        let cases = [
            (
                "example.org {\n    loop argument\n}\n",
                "Corefile:2 - loop: Wrong argument count or unexpected line ending after 'argument'",
            ),
            (
                "example.org {\n    loop\n    loop\n}\n",
                "Corefile:3 - loop: this plugin can only be used once per Server Block",
            ),
            (
                "example.org {\n    loop {\n        max 3\n    }\n}\n",
                "Corefile:3 - loop: unknown property 'max'",
            ),
        ];
        for (corefile, want) in cases {
            assert_eq!(error(corefile), want, "{corefile}");
        }
    }

    #[test]
    fn the_probe_is_two_random_numbers_under_the_first_zone() {
        assert_eq!(Probe::under(&zone_of("."), 1, 2).text, "1.2.");
        assert_eq!(
            Probe::under(&zone_of("example.org."), 45, 3688648895315093531).text,
            "45.3688648895315093531.example.org."
        );
        assert_eq!(
            &*Probe::under(&zone_of("example.org."), 1, 2).key,
            b"\x011\x012\x07example\x03org\x00"
        );
        let p = Probe::new(&zone_of("example.org."));
        let labels: Vec<&str> = p.text.split('.').collect();
        assert_eq!(labels.len(), 5, "{}", p.text);
        assert!(
            labels[..2].iter().all(|l| l.parse::<i64>().is_ok_and(|n| n >= 0)),
            "{}",
            p.text
        );
        assert_eq!(labels[2..], ["example", "org", ""]);
        assert_ne!(Probe::new(&zone_of(".")).text, Probe::new(&zone_of(".")).text);
        // The query CoreDNS sends: RD, one question, HINFO IN, nothing else.
        let q = Probe::under(&zone_of("."), 1, 2).query(0xABCD);
        assert_eq!(
            q,
            b"\xAB\xCD\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x011\x012\x00\x00\x0d\x00\x01"
        );
        // The block's first zone is used.
        let plugin = Loop::new(zone_of("example.org."), None, Timing::COREDNS);
        assert!(plugin.probe.text.ends_with(".example.org."));
    }

    #[test]
    fn the_listen_address_is_the_first_bind_or_none_on_the_block_port() {
        let v6: IpAddr = "::1".parse().unwrap();
        let v4: IpAddr = "10.0.0.1".parse().unwrap();
        let listen = |server: &str, bind| Listen::from_route(server, bind).unwrap();
        assert_eq!(
            listen("dns://:1053", None),
            Listen {
                port: 1053,
                label: ":1053".into()
            }
        );
        assert_eq!(listen("dns://10.0.0.1:53", Some(v4)).label, "10.0.0.1:53");
        assert_eq!(listen("dns://[::1]:5300", Some(v6)).label, "[::1]:5300");
        assert!(Listen::from_route("dns://:x", None).is_none());

        let plugin = Loop::new(zone_of("example.org."), Some(v6), Timing::COREDNS);
        let tag = |server: &str, zone: &str| {
            Arc::new(RouteTag {
                slot: 0,
                server: server.into(),
                zone: zone.into(),
            })
        };
        plugin.attach(&AttachCtx::routes(
            &[
                tag("dns://[::1]:53", "other.org."),
                tag("dns://[::1]:5300", "example.org."),
            ],
            &crate::process::ProcessState::new(),
        ));
        assert_eq!(plugin.target(), Some("[::1]:5300".parse().unwrap()));
        let plugin = Loop::new(zone_of("example.org."), None, Timing::COREDNS);
        assert_eq!(plugin.target(), None);
        plugin.attach(&AttachCtx::routes(
            &[tag("dns://:1053", "other.org.")],
            &crate::process::ProcessState::new(),
        ));
        assert_eq!(plugin.target(), Some("127.0.0.1:1053".parse().unwrap()));
    }

    /// Runs `observe` on a query for `name` (as spelled) and `qtype` from 127.0.0.1:5353:
    /// the fatal message if it was a loop.
    fn sighting(plugin: &Loop, name: &[u8], qtype: u16) -> Option<String> {
        match observe(plugin, name, qtype) {
            Sighting::Loop(message) => Some(message),
            Sighting::Other | Sighting::Probe => None,
        }
    }

    fn observe(plugin: &Loop, name: &[u8], qtype: u16) -> Sighting {
        let raw = QueryBuilder::new(name, qtype).id(1).to_vec();
        let client = "127.0.0.1:5353".parse().unwrap();
        let local = "127.0.0.1:1053".parse().unwrap();
        let req = Request::parse(&raw, Transport::Udp, client, local).ok().unwrap();
        plugin.observe(&req)
    }

    fn attached(zone: &str) -> Loop {
        let mut plugin = Loop::new(zone_of(zone), None, Timing::COREDNS);
        plugin.probe = Probe::under(&zone_of(zone), 4547991504243258144, 3688648895315093531);
        plugin.attach(&AttachCtx::routes(
            &[Arc::new(RouteTag {
                slot: 0,
                server: "dns://:1053".into(),
                zone: zone.into(),
            })],
            &crate::process::ProcessState::new(),
        ));
        plugin
    }

    #[test]
    fn the_third_sighting_of_the_probe_is_a_loop() {
        let plugin = attached("example.org.");
        let probe = b"\x134547991504243258144\x133688648895315093531\x07example\x03org\x00";
        let spelled = b"\x134547991504243258144\x133688648895315093531\x07EXAMPLE\x03Org\x00";
        // Other types, other names, and names below the probe do not count.
        for _ in 0..5 {
            assert_eq!(sighting(&plugin, probe, rtype::A), None);
            assert_eq!(sighting(&plugin, probe, rtype::TXT), None);
            assert_eq!(sighting(&plugin, b"\x011\x07example\x03org\x00", rtype::HINFO), None);
            assert_eq!(
                sighting(
                    &plugin,
                    b"\x01x\x134547991504243258144\x133688648895315093531\x07example\x03org\x00",
                    rtype::HINFO
                ),
                None
            );
        }
        // The probe itself is marked, so that forward sends each copy out (a copy
        // joining one already in flight would hide the loop).
        assert_eq!(observe(&plugin, probe, rtype::HINFO), Sighting::Probe);
        assert_eq!(observe(&plugin, probe, rtype::A), Sighting::Other);
        // Case does not matter (the lookup key is lower-cased).
        assert_eq!(sighting(&plugin, spelled, rtype::HINFO), None);
        assert_eq!(
            sighting(&plugin, probe, rtype::HINFO).as_deref(),
            Some(
                "Loop (127.0.0.1:5353 -> :1053) detected for zone \"example.org.\", see \
                 https://coredns.io/plugins/loop#troubleshooting. Query: \"HINFO \
                 4547991504243258144.3688648895315093531.example.org.\""
            )
        );
    }

    #[test]
    fn nothing_counts_once_probing_is_over() {
        let plugin = attached(".");
        let probe = b"\x134547991504243258144\x133688648895315093531\x00";
        assert_eq!(sighting(&plugin, probe, rtype::HINFO), None);
        assert_eq!(sighting(&plugin, probe, rtype::HINFO), None);
        plugin.state.off.store(true, Ordering::Relaxed);
        for _ in 0..5 {
            assert_eq!(sighting(&plugin, probe, rtype::HINFO), None);
        }
        plugin.state.off.store(false, Ordering::Relaxed);
        assert!(sighting(&plugin, probe, rtype::HINFO).is_some_and(|m| m.contains("for zone \".\"")));
    }

    const QUICK: Timing = Timing {
        window: Duration::from_secs(10),
        retry: Duration::from_millis(50),
        reply_timeout: Duration::from_millis(200),
        disarm_after: Duration::from_millis(100),
    };

    fn wait_until(what: &str, limit: Duration, cond: impl Fn() -> bool) {
        let end = Instant::now() + limit;
        while !cond() {
            assert!(Instant::now() < end, "timed out waiting for {what}");
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// A plugin whose block listens on `port` of 127.0.0.1.
    fn on_port(port: u16) -> Loop {
        let plugin = Loop::new(zone_of("example.org."), None, QUICK);
        plugin.attach(&AttachCtx::routes(
            &[Arc::new(RouteTag {
                slot: 0,
                server: format!("dns://:{port}").into(),
                zone: "example.org.".into(),
            })],
            &crate::process::ProcessState::new(),
        ));
        plugin
    }

    #[test]
    fn the_probe_goes_to_the_listener_is_retried_and_then_disarms() {
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let plugin = on_port(server.local_addr().unwrap().port());
        plugin.state.seen.store(2, Ordering::Relaxed);
        plugin.start();
        // The first probe goes unanswered: the count starts again.
        let mut buf = [0u8; 512];
        let (n, _) = server.recv_from(&mut buf).unwrap();
        let first = buf[..n].to_vec();
        assert_eq!(first[2..], plugin.probe.query(0)[2..]);
        wait_until("the reset", Duration::from_secs(2), || {
            plugin.state.seen.load(Ordering::Relaxed) == 0
        });
        assert!(!plugin.state.off.load(Ordering::Relaxed));
        // The retry is answered (any reply with the ID will do).
        let (n, from) = server.recv_from(&mut buf).unwrap();
        assert_eq!(buf[..n], first[..]);
        let mut header = crate::dns::HeaderMut::of(&mut buf[..n]).unwrap();
        header.set_flag(crate::dns::flag::QR, true);
        header.set_rcode(crate::dns::Rcode::NXDOMAIN);
        server.send_to(&buf[..n], from).unwrap();
        let answered = Instant::now();
        wait_until("disarming", Duration::from_secs(2), || {
            plugin.state.off.load(Ordering::Relaxed)
        });
        assert!(answered.elapsed() >= QUICK.disarm_after - Duration::from_millis(20));
        plugin.stop();
    }

    #[test]
    fn stop_ends_the_probe_thread_at_once() {
        // A listener that never answers: the thread would keep trying for 10 s.
        let server = UdpSocket::bind("127.0.0.1:0").unwrap();
        let plugin = on_port(server.local_addr().unwrap().port());
        plugin.start();
        let mut buf = [0u8; 512];
        server.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        server.recv_from(&mut buf).unwrap();
        let asked = Instant::now();
        plugin.stop();
        assert!(asked.elapsed() < Duration::from_secs(1), "{:?}", asked.elapsed());
        assert!(plugin.prober.lock().is_none());
        assert!(plugin.state.off.load(Ordering::Relaxed));
    }

    #[test]
    fn a_block_without_a_listener_is_not_probed() {
        let plugin = Loop::new(zone_of("example.org."), None, QUICK);
        plugin.start();
        assert!(plugin.prober.lock().is_none());
        assert!(plugin.state.off.load(Ordering::Relaxed));
    }

    /// Set in the child process of the next test, which then really loops.
    const DIE_ENV: &str = "CLUSTERDNS_TEST_LOOP_DIE";

    #[test]
    fn a_loop_ends_the_process_with_coredns_message() {
        let name = "plugin::loop_detect::tests::a_loop_ends_the_process_with_coredns_message";
        if std::env::var_os(DIE_ENV).is_some() {
            let plugin = attached("example.org.");
            let raw = plugin.probe.query(7);
            let client = "127.0.0.1:5353".parse().unwrap();
            let req = Request::parse(&raw, Transport::Udp, client, client).ok().unwrap();
            let mut resp = crate::dns::Response::new();
            let mut worker = crate::chain::WorkerCtx::new(0);
            let tag = RouteTag {
                slot: 0,
                server: "dns://:1053".into(),
                zone: "example.org.".into(),
            };
            for _ in 0..3 {
                let mut q = Query {
                    req: &req,
                    resp: &mut resp,
                    worker: &mut worker,
                    route: &tag,
                    answered_by: "",
                    error: None,
                    refresh: false,
                    coalesce: true,
                    meta: crate::chain::Metadata::NONE,
                };
                assert!(matches!(plugin.serve(&mut q), Step::Next));
            }
            unreachable!("the third sighting ends the process");
        }
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(DIE_ENV, "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(1), "{stdout}");
        let want = "[FATAL] plugin/loop: Loop (127.0.0.1:5353 -> :1053) detected for zone \"example.org.\", \
                    see https://coredns.io/plugins/loop#troubleshooting. Query: \"HINFO \
                    4547991504243258144.3688648895315093531.example.org.\"";
        // (The test harness's own `test … ... ` precedes it on the line.)
        assert!(stdout.lines().any(|l| l.ends_with(want)), "{stdout}");
    }
}
