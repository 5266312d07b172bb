//! The command line, as CoreDNS's: `-version`, `-plugins`, `-conf` (a file, `stdin`,
//! the built-in default), `-dns.port`/`-p`, `-pidfile`, `-quiet`, the signals, and
//! clusterdns's own `-check` and `-workers`. Always the real binary.

use std::io::Write;
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};
use testkit::prelude::*;
use testkit::process::{Process, Spawn};

/// A process started by hand (for what [`Launch`] cannot do: no `-conf`, or
/// `-conf stdin`), its output captured, stopped (SIGTERM, then SIGKILL) on drop.
fn spawn(mut cmd: Command) -> Process {
    cmd.env("RUST_LOG", "info");
    Spawn::command(cmd).start()
}

/// Polls `addr` with a query for `name` until it answers (10 s at most).
fn wait_answering(p: &mut Process, addr: SocketAddr, name: &str) {
    if !wait_udp(addr, name, Duration::from_secs(10)) {
        let status = p.child.try_wait().ok().flatten();
        panic!("no answer on {addr} (exit status {status:?}):\n{}", p.output());
    }
}

/// Polls `addr` over UDP with a query for `name` until any reply comes, up to `within`.
fn wait_udp(addr: SocketAddr, name: &str, within: Duration) -> bool {
    let end = Instant::now() + within;
    let q = query_bytes(name, Rtype::A, Some(1232), 0x5151);
    while Instant::now() < end {
        if raw_udp(addr, &q, Duration::from_millis(100)).is_some() {
            return true;
        }
    }
    false
}

fn local(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// Go's name for this architecture, as `-version` prints it.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// The lines of `s`, sorted (for error lists whose order is not the point).
fn sorted_lines(s: &str) -> Vec<String> {
    let mut v: Vec<String> = s.lines().map(str::to_owned).collect();
    v.sort();
    v
}

/// A Corefile serving `a.example.org` (10.0.0.1) on `{port}`, loopback only.
const HOSTS_COREFILE: &str =
    "example.org:{port} {\n    bind 127.0.0.1\n    hosts {\n        10.0.0.1 a.example.org\n    }\n}\n";

fn assert_hosts_answer(msg: &Message<Vec<u8>>) {
    assert_eq!(rcode(msg), Rcode::NOERROR);
    assert_eq!(section(msg, "answer"), vec!["a.example.org. 3600 IN A 10.0.0.1"]);
}

// ---------------------------------------------------------------------------------
// Informational flags

#[test]
fn version_prints_name_version_and_build_line() {
    let dir = Scratch::new("version");
    for flag in ["-version", "--version"] {
        let (code, out, err) = run(&[flag], &dir.0, None);
        assert_eq!(code, 0, "{flag}: {err}");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{flag}: {out:?}");
        assert_eq!(lines[0], format!("clusterdns-{}", env!("CARGO_PKG_VERSION")));
        let parts: Vec<&str> = lines[1].split(", ").collect();
        assert_eq!(parts.len(), 3, "{:?}", lines[1]);
        assert_eq!(parts[0], format!("linux/{}", go_arch()));
        assert!(parts[1].starts_with("rustc "), "{:?}", lines[1]);
        assert!(parts[1].len() > "rustc ".len(), "{:?}", lines[1]);
        assert!(!parts[2].trim().is_empty(), "commit missing: {:?}", lines[1]);
        assert_eq!(err, "");
    }
}

#[test]
fn plugins_lists_the_implemented_plugins() {
    let dir = Scratch::new("plugins");
    let (code, out, err) = run(&["-plugins"], &dir.0, None);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().map(str::trim).collect();
    for p in [
        "dns.hosts",
        "dns.whoami",
        "dns.log",
        "dns.errors",
        "dns.bind",
        "dns.kubernetes",
        "dns.forward",
        "dns.rewrite",
    ] {
        assert!(lines.contains(&p), "{p} missing from:\n{out}");
    }
    // Only what clusterdns has: no CoreDNS plugin it lacks.
    for p in ["dns.geoip", "dns.dnssec", "dns.etcd"] {
        assert!(!lines.contains(&p), "{p} listed but not implemented:\n{out}");
    }
    assert!(out.starts_with("Server types:\n  dns\n"), "{out}");
}

#[test]
fn help_prints_usage_and_exits_zero() {
    let dir = Scratch::new("help");
    for flag in ["-h", "-help", "--help"] {
        let (code, out, _) = run(&[flag], &dir.0, None);
        assert_eq!(code, 0, "{flag}");
        assert!(out.starts_with("Usage of clusterdns:\n"), "{flag}: {out}");
        for f in [
            "-conf",
            "-dns.port",
            "-pidfile",
            "-plugins",
            "-quiet",
            "-version",
            "-check",
            "-workers",
        ] {
            assert!(
                out.contains(&format!("  {f} ")) || out.contains(&format!("  {f}\n")),
                "{f} in usage:\n{out}"
            );
        }
    }
}

// ---------------------------------------------------------------------------------
// Command-line errors

#[test]
fn stray_argument_is_an_error() {
    let dir = Scratch::new("stray");
    let (code, out, err) = run(&["-quiet", "stray"], &dir.0, None);
    assert_eq!(code, 2);
    assert_eq!(out, "");
    assert!(err.starts_with("extra command line arguments: stray\n"), "{err}");
    assert!(err.contains("Usage of clusterdns:"), "{err}");
    // Even after `--`.
    let (code, _, err) = run(&["--", "x"], &dir.0, None);
    assert_eq!(code, 2);
    assert!(err.starts_with("extra command line arguments: x\n"), "{err}");
}

#[test]
fn unknown_flag_is_an_error() {
    let dir = Scratch::new("unknown-flag");
    let (code, out, err) = run(&["-frobnicate"], &dir.0, None);
    assert_eq!(code, 2);
    assert_eq!(out, "");
    assert!(err.starts_with("flag provided but not defined: -frobnicate\n"), "{err}");
    assert!(err.contains("Usage of clusterdns:"), "{err}");
    // A flag missing its value.
    let (code, _, err) = run(&["-conf"], &dir.0, None);
    assert_eq!(code, 2);
    assert!(err.starts_with("flag needs an argument: -conf\n"), "{err}");
}

// ---------------------------------------------------------------------------------
// -check

#[test]
fn check_accepts_a_valid_corefile_and_binds_nothing() {
    let dir = Scratch::new("check-ok");
    // Hold the port on 127.0.0.1, UDP and TCP: binding it would fail.
    let port = free_port();
    let _udp = UdpSocket::bind(local(port)).expect("bind udp");
    let _tcp = TcpListener::bind(local(port)).expect("bind tcp");
    let corefile = HOSTS_COREFILE.replace("{port}", &port.to_string());
    dir.write("Corefile", &corefile);
    let (code, out, err) = run(&["-check", "-conf", "Corefile"], &dir.0, None);
    assert_eq!((code, out.as_str(), err.as_str()), (0, "Corefile OK\n", ""));
    // Without -check the same Corefile does try to bind, and fails: the check above
    // would have seen it.
    let (code, _, err) = run(&["-conf", "Corefile", "-quiet"], &dir.0, None);
    assert_eq!(code, 1);
    assert!(err.contains(&format!("listen 127.0.0.1:{port}: ")), "{err}");
    assert!(err.contains("Address already in use"), "{err}");
}

#[test]
fn check_reports_every_error_with_file_and_line() {
    let dir = Scratch::new("check-errors");
    let text = "\
example.org:1053 {
    bind 127.0.0.1
    frobnicate
}
example.net:1053 {
    bind 127.0.0.1
    hosts {
        frobnicate
    }
}
example.com:1053 {
    bind 127.0.0.1
    whoami
}
example.com:1053 {
    bind 127.0.0.1
    whoami
}
";
    dir.write("Corefile", text);
    let (code, out, err) = run(&["-check", "-conf", "Corefile"], &dir.0, None);
    assert_eq!(code, 1);
    assert_eq!(out, "", "no 'Corefile OK'");
    assert_eq!(
        sorted_lines(&err),
        vec![
            "Corefile:15 - cannot serve dns://example.com.:1053 - it is already defined",
            "Corefile:3 - Error during parsing: Unknown directive 'frobnicate'",
            "Corefile:8 - hosts: unknown property 'frobnicate'",
        ]
    );
}

#[test]
fn check_reports_a_syntax_error() {
    let dir = Scratch::new("check-syntax");
    dir.write(
        "Corefile",
        "a.example.org {\n    whoami\n}\n\nb.example.org\n    whoami\n",
    );
    let (code, out, err) = run(&["-check", "-conf", "Corefile"], &dir.0, None);
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert_eq!(
        err,
        "Corefile:6 - Syntax error: Unexpected token 'whoami', expecting '{'\n"
    );
    // An unclosed block.
    dir.write(
        "Corefile",
        "example.org {\n    bind 127.0.0.1\n    hosts {\n        10.0.0.1 a.example.org\n}\n",
    );
    let (code, _, err) = run(&["-check", "-conf", "Corefile"], &dir.0, None);
    assert_eq!(code, 1);
    assert_eq!(err, "Corefile:5 - Error during parsing: Unexpected EOF\n");
}

#[test]
fn check_with_default_corefile_in_the_working_directory() {
    // No -conf: `Corefile` in the working directory is the one checked.
    let dir = Scratch::new("check-cwd");
    dir.write("Corefile", ". {\n    bind 127.0.0.1\n    nosuchplugin\n}\n");
    let (code, _, err) = run(&["-check"], &dir.0, None);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "Corefile:3 - Error during parsing: Unknown directive 'nosuchplugin'\n"
    );
}

#[test]
fn invalid_corefile_stops_start_up() {
    let dir = Scratch::new("start-invalid");
    let port = free_port();
    dir.write(
        "Corefile",
        &format!("example.org:{port} {{\n    bind 127.0.0.1\n    whoami\n    hosts {{\n        ttl 0\n    }}\n}}\n"),
    );
    let (code, out, err) = run(&["-conf", "Corefile"], &dir.0, None);
    assert_eq!(code, 1);
    assert_eq!(err, "Corefile:5 - hosts: ttl provided is invalid\n");
    assert!(!out.contains("clusterdns-"), "no banner: {out}");
    // Nothing was left listening: the port is free on UDP and TCP.
    assert!(UdpSocket::bind(local(port)).is_ok());
    assert!(TcpListener::bind(local(port)).is_ok());
}

// ---------------------------------------------------------------------------------
// Where the Corefile comes from

#[test]
fn conf_stdin_reads_standard_input() {
    let dir = Scratch::new("stdin");
    let port = free_port();
    let corefile = HOSTS_COREFILE.replace("{port}", &port.to_string());
    let mut cmd = Command::new(binary());
    cmd.args(["-conf", "stdin"]).current_dir(&dir.0).stdin(Stdio::piped());
    let mut p = spawn(cmd);
    {
        let mut stdin = p.child.stdin.take().expect("stdin");
        stdin.write_all(corefile.as_bytes()).unwrap();
        // Dropped: standard input is closed, the Corefile complete.
    }
    wait_answering(&mut p, local(port), "a.example.org");
    assert_hosts_answer(&udp_exchange(
        local(port),
        &query_bytes("a.example.org", Rtype::A, Some(1232), 1),
    ));
    assert!(p.wait_output(Duration::from_secs(3), |o| {
        o.contains(&format!("example.org.:{port} on 127.0.0.1"))
    }));
    drop(p);

    // Errors name `stdin` as the file.
    let (code, _, err) = run(
        &["-conf", "stdin"],
        &dir.0,
        Some(". {\n    bind 127.0.0.1\n\n    bogus\n}\n"),
    );
    assert_eq!(code, 1);
    assert_eq!(err, "stdin:4 - Error during parsing: Unknown directive 'bogus'\n");
}

#[test]
fn default_corefile_serves_whoami_when_there_is_none() {
    // The one server not bound to loopback only: `.:PORT { whoami log }` listens on
    // every address, as CoreDNS does without a Corefile.
    let dir = Scratch::new("default");
    let port = free_port();
    let mut cmd = Command::new(binary());
    cmd.args(["-dns.port", &port.to_string()])
        .current_dir(&dir.0)
        .stdin(Stdio::null());
    let mut p = spawn(cmd);
    wait_answering(&mut p, local(port), "example.org");

    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let client_port = sock.local_addr().unwrap().port();
    sock.send_to(&query_bytes("who.example.org", Rtype::A, Some(1232), 7), local(port))
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = sock.recv(&mut buf).expect("whoami reply");
    buf.truncate(n);
    let r = Message::from_octets(buf).unwrap();
    assert_eq!(rcode(&r), Rcode::NOERROR);
    assert!(r.header().aa());
    assert_eq!(section(&r, "answer"), Vec::<String>::new());
    // (The client library prints the root target as an empty name.)
    let additional: Vec<String> = section(&r, "additional")
        .iter()
        .map(|r| r.trim_end_matches(['.', ' ']).to_owned())
        .collect();
    assert_eq!(
        additional,
        vec![
            "who.example.org. 0 IN A 127.0.0.1".to_string(),
            format!("_udp.who.example.org. 0 IN SRV 0 0 {client_port}")
        ]
    );
    // `log` is on: the query shows in the output, in the common format.
    let want = format!("[INFO] 127.0.0.1:{client_port} - 7 \"A IN who.example.org. udp ");
    assert!(
        p.wait_output(Duration::from_secs(3), |o| o.contains(&want)),
        "{want}\n{}",
        p.output()
    );
    // The banner names the default key, with no bind.
    assert!(
        p.wait_output(Duration::from_secs(3), |o| o.lines().any(|l| l == format!(".:{port}"))),
        "{}",
        p.output()
    );
}

#[test]
fn missing_conf_file_is_an_error_naming_it() {
    let dir = Scratch::new("missing");
    let (code, out, err) = run(&["-conf", "missing-file"], &dir.0, None);
    assert_eq!(code, 1);
    assert_eq!(out, "");
    assert!(err.starts_with("missing-file: "), "{err}");
    assert!(err.contains("No such file or directory"), "{err}");
    // -check as well.
    let (code, _, err) = run(&["-check", "-conf", "missing-file"], &dir.0, None);
    assert_eq!(code, 1);
    assert!(err.starts_with("missing-file: "), "{err}");
}

// ---------------------------------------------------------------------------------
// -dns.port / -p

#[test]
fn dns_port_sets_the_port_of_keys_without_one() {
    for flag in ["-dns.port", "-p"] {
        let port = free_port();
        let s = Launch::new(". {\n    bind 127.0.0.1\n    whoami\n}\n")
            .arg(flag)
            .arg(port.to_string())
            .no_wait()
            .start();
        assert!(
            wait_udp(local(port), "x.example.org", Duration::from_secs(10)),
            "{flag}: {}",
            s.output()
        );
        let r = udp_exchange(local(port), &query_bytes("x.example.org", Rtype::A, Some(1232), 3));
        assert_eq!(rcode(&r), Rcode::NOERROR);
        assert_eq!(section(&r, "additional")[0], "x.example.org. 0 IN A 127.0.0.1");
    }
    // The `-flag=value` form.
    let port = free_port();
    let s = Launch::new(". {\n    bind 127.0.0.1\n    whoami\n}\n")
        .arg(format!("-dns.port={port}"))
        .no_wait()
        .start();
    assert!(
        wait_udp(local(port), "x.example.org", Duration::from_secs(10)),
        "{}",
        s.output()
    );
}

#[test]
fn a_keys_own_port_wins_over_dns_port() {
    let other = free_port();
    let s = Launch::new(
        "a.example.org:{port} {\n    bind 127.0.0.1\n    hosts {\n        10.0.0.1 a.example.org\n    }\n}\n\
         b.example.org {\n    bind 127.0.0.1\n    hosts {\n        10.0.0.2 b.example.org\n    }\n}\n",
    )
    .arg("-dns.port")
    .arg(other.to_string())
    .no_wait()
    .start();
    assert!(
        wait_udp(s.addr(), "a.example.org", Duration::from_secs(10)),
        "{}",
        s.output()
    );
    assert!(
        wait_udp(local(other), "b.example.org", Duration::from_secs(10)),
        "{}",
        s.output()
    );
    assert_hosts_answer(&s.query("a.example.org", Rtype::A));
    let b = udp_exchange(local(other), &query_bytes("b.example.org", Rtype::A, Some(1232), 4));
    assert_eq!(section(&b, "answer"), vec!["b.example.org. 3600 IN A 10.0.0.2"]);
    // Each block only on its own port: the other port refuses its names.
    assert_eq!(rcode(&s.query("b.example.org", Rtype::A)), Rcode::REFUSED);
    let a = udp_exchange(local(other), &query_bytes("a.example.org", Rtype::A, Some(1232), 5));
    assert_eq!(rcode(&a), Rcode::REFUSED);
}

// ---------------------------------------------------------------------------------
// -pidfile, -quiet, signals

/// Waits until the start-up banner is out (the last thing printed before the signal
/// handlers go in), then a little longer: signals sent earlier are not handled yet
/// (see `signals_are_handled_once_the_pidfile_exists`).
fn settle(s: &Server) {
    assert!(
        s.wait_output(Duration::from_secs(5), |o| o
            .contains(&format!("linux/{}, rustc ", go_arch()))),
        "{}",
        s.output()
    );
    std::thread::sleep(Duration::from_millis(100));
}

#[test]
fn pidfile_holds_the_pid_and_is_removed_on_sigterm() {
    let dir = Scratch::new("pidfile");
    let pidfile = dir.path("clusterdns.pid");
    let mut s = Launch::new(HOSTS_COREFILE)
        .arg("-pidfile")
        .arg(pidfile.display().to_string())
        .start();
    settle(&s);
    let text = std::fs::read_to_string(&pidfile).expect("pidfile written");
    assert_eq!(text.trim(), s.pid().to_string());
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(5)), Some(0), "{}", s.output());
    assert!(!pidfile.exists(), "pidfile removed on exit");
    assert!(s.output().contains("SIGTERM"), "{}", s.output());
}

#[test]
fn quiet_suppresses_the_banner() {
    let quiet = Launch::new(HOSTS_COREFILE).arg("-quiet").start();
    let loud = Launch::new(HOSTS_COREFILE).start();
    let banner = |port: u16| format!("example.org.:{port} on 127.0.0.1");
    assert!(
        loud.wait_output(Duration::from_secs(3), |o| o.contains("clusterdns-")
            && o.contains(&banner(loud.port))),
        "{}",
        loud.output()
    );
    let out = loud.output();
    let lines: Vec<&str> = out.lines().collect();
    let at = lines.iter().position(|l| *l == banner(loud.port)).expect("banner line");
    assert_eq!(lines[at + 1], format!("clusterdns-{}", env!("CARGO_PKG_VERSION")));
    assert!(
        lines[at + 2].starts_with(&format!("linux/{}, rustc ", go_arch())),
        "{out}"
    );

    // The quiet one has had as long, and still answers, but said nothing.
    assert_hosts_answer(&quiet.query("a.example.org", Rtype::A));
    std::thread::sleep(Duration::from_millis(300));
    let out = quiet.output();
    assert!(!out.contains("clusterdns-"), "{out}");
    assert!(!out.contains(&banner(quiet.port)), "{out}");
}

#[test]
fn sighup_is_ignored() {
    let mut s = Launch::new(HOSTS_COREFILE).start();
    settle(&s);
    s.signal(libc::SIGHUP);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(s.child.try_wait().unwrap(), None, "still running after SIGHUP");
    assert_hosts_answer(&s.query("a.example.org", Rtype::A));
    assert_hosts_answer(&s.query_tcp("a.example.org", Rtype::A));
}

#[test]
fn sigquit_exits_at_once() {
    let mut s = Launch::new(HOSTS_COREFILE).start();
    settle(&s);
    // An idle TCP connection a graceful stop might wait for.
    let _conn = std::net::TcpStream::connect(s.addr()).unwrap();
    let start = Instant::now();
    s.signal(libc::SIGQUIT);
    let code = s.wait_exit(Duration::from_secs(3));
    assert_eq!(code, Some(0), "{}", s.output());
    assert!(
        start.elapsed() < Duration::from_millis(900),
        "took {:?}",
        start.elapsed()
    );
    // Gone: no answer any more.
    assert!(
        s.raw_udp(
            &query_bytes("a.example.org", Rtype::A, None, 1),
            Duration::from_millis(300)
        )
        .is_none()
    );
}

#[test]
fn signals_are_handled_once_the_pidfile_exists() {
    // A supervisor that signals the PID as soon as the pidfile holds it. The window is
    // short, so try a few times; each try is well under a second.
    for attempt in 0..5 {
        let dir = Scratch::new("pidfile-race");
        let pidfile = dir.path("clusterdns.pid");
        let mut s = Launch::new(HOSTS_COREFILE)
            .arg("-quiet")
            .arg("-pidfile")
            .arg(pidfile.display().to_string())
            .no_wait()
            .start();
        let end = Instant::now() + Duration::from_secs(10);
        while !pidfile.exists() {
            assert!(Instant::now() < end, "no pidfile: {}", s.output());
            std::hint::spin_loop();
        }
        s.signal(libc::SIGTERM);
        let status = {
            let end = Instant::now() + Duration::from_secs(5);
            loop {
                if let Some(status) = s.child.try_wait().unwrap() {
                    break status;
                }
                assert!(Instant::now() < end, "attempt {attempt}: no exit after SIGTERM");
                std::thread::sleep(Duration::from_millis(10));
            }
        };
        assert_eq!(
            status.code(),
            Some(0),
            "attempt {attempt}: SIGTERM must stop cleanly, got {status:?}"
        );
        assert!(!pidfile.exists(), "attempt {attempt}: pidfile left behind");
    }
}

// ---------------------------------------------------------------------------------
// -workers

/// The names of the process's threads that are workers.
fn worker_threads(pid: u32) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("task dir")
        .filter_map(|e| std::fs::read_to_string(e.ok()?.path().join("comm")).ok())
        .map(|n| n.trim().to_owned())
        .filter(|n| n.starts_with("worker-"))
        .collect();
    names.sort();
    names
}

#[test]
fn workers_flag_sets_the_worker_count() {
    for n in [1usize, 3] {
        let s = Launch::new(HOSTS_COREFILE).arg("-workers").arg(n.to_string()).start();
        let want: Vec<String> = (0..n).map(|i| format!("worker-{i}")).collect();
        assert_eq!(worker_threads(s.pid()), want);
        for _ in 0..10 {
            assert_hosts_answer(&s.query("a.example.org", Rtype::A));
            assert_hosts_answer(&s.query_tcp("a.example.org", Rtype::A));
        }
    }
}

#[test]
fn workers_zero_is_rejected() {
    let dir = Scratch::new("workers0");
    for v in ["0", "many", "-1"] {
        let (code, out, err) = run(&["-workers", v], &dir.0, None);
        assert_eq!(code, 2, "-workers {v}");
        assert_eq!(out, "");
        assert!(
            err.starts_with(&format!("invalid value \"{v}\" for flag -workers: want 1 to 1024\n")),
            "{err}"
        );
    }
}
