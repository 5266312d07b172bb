//! The Corefile grammar end to end: keys, blocks, quoting, comments, environment
//! substitution, imports, the errors every mistake gives, routing between blocks,
//! CoreDNS's plugin order, `bind` and `timeouts`, and a real client (`dig`).

use std::io::Read;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};

use testkit::prelude::*;

fn at(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

/// A UDP query for `name` to `addr`.
fn ask(addr: SocketAddr, name: &str, qtype: Rtype) -> Message<Vec<u8>> {
    udp_exchange(addr, &query_bytes(name, qtype, Some(1232), 0x2222))
}

/// Polls `addr` over UDP until any reply comes (10 s at most).
fn wait_udp(addr: SocketAddr) -> bool {
    let end = Instant::now() + Duration::from_secs(10);
    let q = query_bytes("example.org", Rtype::A, Some(1232), 0x3333);
    while Instant::now() < end {
        if raw_udp(addr, &q, Duration::from_millis(100)).is_some() {
            return true;
        }
    }
    false
}

fn answer(msg: &Message<Vec<u8>>) -> Vec<String> {
    section(msg, "answer")
}

/// Asserts a NOERROR answer holding exactly `records`.
#[track_caller]
fn assert_answer(msg: &Message<Vec<u8>>, records: &[&str]) {
    assert_eq!(rcode(msg), Rcode::NOERROR, "{:?}", answer(msg));
    assert_eq!(answer(msg), records);
}

/// Asserts a whoami reply for `name` from 127.0.0.1: nothing in the answer section, the
/// client's address in the additional one.
#[track_caller]
fn assert_whoami(msg: &Message<Vec<u8>>, name: &str) {
    assert_eq!(rcode(msg), Rcode::NOERROR);
    assert!(answer(msg).is_empty(), "{:?}", answer(msg));
    let additional = section(msg, "additional");
    assert_eq!(additional.len(), 2, "{additional:?}");
    assert_eq!(additional[0], format!("{name}. 0 IN A 127.0.0.1"));
    assert!(
        additional[1].starts_with(&format!("_udp.{name}. 0 IN SRV 0 0 ")),
        "{additional:?}"
    );
}

/// Runs `clusterdns -check -conf Corefile` on `text` (in a scratch dir, with `files`
/// beside it); returns (exit code, stdout, stderr).
fn check(text: &str, files: &[(&str, &str)]) -> (i32, String, String) {
    let dir = Scratch::new("check");
    dir.write("Corefile", text);
    for (name, body) in files {
        dir.write(name, body);
    }
    run(&["-check", "-conf", "Corefile"], &dir.0, None)
}

/// Asserts that `text` fails `-check` with exactly `error` (one line), and that
/// starting a server on it fails the same way.
#[track_caller]
fn assert_rejected(text: &str, files: &[(&str, &str)], error: &str) {
    let (code, out, err) = check(text, files);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (1, "", format!("{error}\n").as_str()),
        "-check"
    );
    let dir = Scratch::new("start");
    dir.write("Corefile", text);
    for (name, body) in files {
        dir.write(name, body);
    }
    let (code, out, err) = run(&["-conf", "Corefile"], &dir.0, None);
    assert_eq!(code, 1, "start-up must fail: {out}{err}");
    assert_eq!(err, format!("{error}\n"));
    assert!(!out.contains("clusterdns-"), "no banner: {out}");
}

// ---------------------------------------------------------------------------------
// Keys

#[test]
fn several_keys_on_one_block() {
    let s = Server::start(
        "a.example:{port} b.example:{port} {\n    bind 127.0.0.1\n    hosts {\n        10.0.0.1 x.a.example\n        10.0.0.2 x.b.example\n    }\n}\n",
    );
    assert_answer(&s.query("x.a.example", Rtype::A), &["x.a.example. 3600 IN A 10.0.0.1"]);
    assert_answer(&s.query("x.b.example", Rtype::A), &["x.b.example. 3600 IN A 10.0.0.2"]);
    assert_eq!(rcode(&s.query("x.c.example", Rtype::A)), Rcode::REFUSED);
    assert!(s.wait_output(Duration::from_secs(3), |o| {
        o.contains(&format!(
            "a.example.:{} on 127.0.0.1\nb.example.:{} on 127.0.0.1\n",
            s.port, s.port
        ))
    }));
}

#[test]
fn comma_continued_keys_across_lines() {
    let s = Server::start(
        "a.example:{port},\n    b.example:{port},\n    c.example:{port} {\n    bind 127.0.0.1\n    hosts {\n        10.0.0.1 x.a.example\n        10.0.0.2 x.b.example\n        10.0.0.3 x.c.example\n    }\n}\n",
    );
    assert_answer(&s.query("x.a.example", Rtype::A), &["x.a.example. 3600 IN A 10.0.0.1"]);
    assert_answer(&s.query("x.b.example", Rtype::A), &["x.b.example. 3600 IN A 10.0.0.2"]);
    assert_answer(&s.query("x.c.example", Rtype::A), &["x.c.example. 3600 IN A 10.0.0.3"]);
    assert_eq!(rcode(&s.query("x.d.example", Rtype::A)), Rcode::REFUSED);
}

#[test]
fn dns_scheme_and_quoted_keys() {
    let s = Server::start(
        "dns://a.example:{port} \"b.example:{port}\" {\n    bind 127.0.0.1\n    hosts {\n        10.0.0.1 x.a.example\n        10.0.0.2 x.b.example\n    }\n}\n",
    );
    assert_answer(&s.query("x.a.example", Rtype::A), &["x.a.example. 3600 IN A 10.0.0.1"]);
    assert_answer(&s.query("x.b.example", Rtype::A), &["x.b.example. 3600 IN A 10.0.0.2"]);
    // Other schemes are refused (tls:// is served: tests/e2e/tls.rs).
    let (code, _, err) = check("https://a.example:8443 {\n    bind 127.0.0.1\n}\n", &[]);
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "Corefile:1 - Error during parsing: https:// is not supported by clusterdns (only dns:// and tls://)\n"
    );
}

#[test]
fn cidr_key_serves_its_reverse_zone() {
    let s = Server::start(
        "example.org:{port} 10.0.0.0/24:{port} {\n    bind 127.0.0.1\n    hosts {\n        10.0.0.5 five.example.org\n        10.0.1.5 other.example.org\n    }\n}\n",
    );
    assert_answer(
        &s.query("5.0.0.10.in-addr.arpa", Rtype::PTR),
        &["5.0.0.10.in-addr.arpa. 3600 IN PTR five.example.org."],
    );
    // 10.0.1.0 is outside the /24: no block serves its reverse zone.
    assert_eq!(rcode(&s.query("5.1.0.10.in-addr.arpa", Rtype::PTR)), Rcode::REFUSED);
    assert_eq!(rcode(&s.query("10.in-addr.arpa", Rtype::SOA)), Rcode::REFUSED);
    assert!(
        s.wait_output(Duration::from_secs(3), |o| o
            .contains(&format!("0.0.10.in-addr.arpa.:{} on 127.0.0.1", s.port))),
        "{}",
        s.output()
    );
}

// ---------------------------------------------------------------------------------
// Blocks, nesting, quoting, comments

#[test]
fn single_block_without_braces_with_nested_block() {
    let s = Server::start(
        "example.org:{port}\nbind 127.0.0.1\nhosts {\n    10.0.0.1 a.example.org\n    fallthrough\n}\nwhoami\n",
    );
    assert_answer(
        &s.query("a.example.org", Rtype::A),
        &["a.example.org. 3600 IN A 10.0.0.1"],
    );
    // Not in hosts: `fallthrough` hands it to whoami.
    assert_whoami(&s.query("b.example.org", Rtype::A), "b.example.org");
}

#[test]
fn without_fallthrough_hosts_does_not_pass_on() {
    // The control for the test above: the same block without `fallthrough`.
    let s = Server::start(
        "example.org:{port} {\n    bind 127.0.0.1\n    hosts {\n        10.0.0.1 a.example.org\n    }\n    whoami\n}\n",
    );
    let r = s.query("b.example.org", Rtype::A);
    assert_eq!(rcode(&r), Rcode::SERVFAIL);
    assert!(section(&r, "additional").is_empty());
}

#[test]
fn quoted_log_format_produces_such_lines() {
    let s = Server::start(
        "example.org:{port} {\n    bind 127.0.0.1\n    log . \"{remote} {type} {name} q=\\\"{rcode}\\\"\"\n    hosts {\n        10.0.0.1 a.example.org\n    }\n}\n",
    );
    assert_answer(
        &s.query("a.example.org", Rtype::A),
        &["a.example.org. 3600 IN A 10.0.0.1"],
    );
    s.query("a.example.org", Rtype::AAAA);
    let want = [
        "[INFO] 127.0.0.1 A a.example.org. q=\"NOERROR\"",
        "[INFO] 127.0.0.1 AAAA a.example.org. q=\"NOERROR\"",
    ];
    assert!(
        s.wait_output(Duration::from_secs(3), |o| want
            .iter()
            .all(|w| o.lines().any(|l| l == *w))),
        "{}",
        s.output()
    );
}

#[test]
fn comments_everywhere() {
    let s = Server::start(
        "# a comment before everything\n\
         example.org:{port} { # after the brace\n\
         \x20   # a whole line, indented\n\
         \x20   bind 127.0.0.1 # end of line\n\
         \x20   hosts { # after a nested brace\n\
         \x20       10.0.0.1 a.example.org # after an entry\n\
         # at the start of a line, inside a block\n\
         \x20       # 10.0.0.9 hidden.example.org\n\
         \x20       10.0.0.2 b.example.org#glued to a word\n\
         \x20       fallthrough\n\
         \x20   } # after a closing brace\n\
         \x20   whoami\n\
         } # after the last brace\n\
         # and at the end, without a newline",
    );
    assert_answer(
        &s.query("a.example.org", Rtype::A),
        &["a.example.org. 3600 IN A 10.0.0.1"],
    );
    assert_answer(
        &s.query("b.example.org", Rtype::A),
        &["b.example.org. 3600 IN A 10.0.0.2"],
    );
    // The commented-out entry does not exist: the query goes on to whoami.
    assert_whoami(&s.query("hidden.example.org", Rtype::A), "hidden.example.org");
}

// ---------------------------------------------------------------------------------
// Environment

#[test]
fn environment_substitution_in_keys_and_args() {
    let s = Launch::new(
        "{$CDNS_TEST_ZONE}:{port} {%CDNS_TEST_ZONE2%}:{port} {\n    bind 127.0.0.1\n    log . \"{$CDNS_TEST_TAG} {name}\"\n    hosts {\n        {%CDNS_TEST_ADDR%} a.{$CDNS_TEST_ZONE}\n        10.0.0.2 b.{%CDNS_TEST_ZONE2%}\n        10.0.0.3 c.example.org{$CDNS_TEST_UNSET}\n    }\n}\n",
    )
    .env("CDNS_TEST_ZONE", "example.org")
    .env("CDNS_TEST_ZONE2", "example.net")
    .env("CDNS_TEST_ADDR", "10.0.0.1")
    .env("CDNS_TEST_TAG", "env-tag")
    .start();
    assert_answer(
        &s.query("a.example.org", Rtype::A),
        &["a.example.org. 3600 IN A 10.0.0.1"],
    );
    assert_answer(
        &s.query("b.example.net", Rtype::A),
        &["b.example.net. 3600 IN A 10.0.0.2"],
    );
    // An unset variable is empty.
    assert_answer(
        &s.query("c.example.org", Rtype::A),
        &["c.example.org. 3600 IN A 10.0.0.3"],
    );
    assert!(
        s.wait_output(Duration::from_secs(3), |o| o
            .lines()
            .any(|l| l == "[INFO] env-tag b.example.net.")),
        "{}",
        s.output()
    );
    // The banner is printed once the workers run, so it can come after the first
    // answers (and their log lines): wait for it too.
    let banner = format!("example.net.:{} on 127.0.0.1", s.port);
    assert!(
        s.wait_output(Duration::from_secs(3), |o| o.contains(&banner)),
        "{}",
        s.output()
    );
}

#[test]
fn unset_variable_as_the_only_key_is_an_error() {
    let (code, _, err) = check(
        "{$CDNS_TEST_SURELY_UNSET_VAR} {\n    bind 127.0.0.1\n    whoami\n}\n",
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "Corefile:1 - Error during parsing: server block has no key (is an environment variable unset?)\n"
    );
}

// ---------------------------------------------------------------------------------
// Imports

#[test]
fn import_a_file_a_glob_and_a_snippet() {
    let inc = Scratch::new("imports");
    inc.write(
        "hosts.conf",
        "# imported\nhosts {\n    10.0.0.1 a.example.org\n    10.0.0.2 a.example.net\n    fallthrough\n}\n",
    );
    inc.write("conf.d/10-log.conf", "log . \"glob-one {name}\"\n");
    inc.write("conf.d/20-whoami.conf", "whoami\n");
    // Not matched by `*.conf`; would be an error if it were imported.
    inc.write("conf.d/notes.txt", "frobnicate\n");
    let d = inc.0.display();
    let corefile = format!(
        "(common) {{\n    bind 127.0.0.1\n    import {d}/hosts.conf\n}}\n\
         example.org:{{port}} {{\n    import common\n    import {d}/conf.d/*.conf\n}}\n\
         example.net:{{port}} {{\n    import common\n}}\n"
    );
    let s = Server::start(&corefile);
    // The snippet (with the file it imports) is in both blocks.
    assert_answer(
        &s.query("a.example.org", Rtype::A),
        &["a.example.org. 3600 IN A 10.0.0.1"],
    );
    assert_answer(
        &s.query("a.example.net", Rtype::A),
        &["a.example.net. 3600 IN A 10.0.0.2"],
    );
    // Both glob files are in the example.org block only: whoami after fallthrough, and
    // the log line.
    assert_whoami(&s.query("other.example.org", Rtype::A), "other.example.org");
    assert!(
        s.wait_output(Duration::from_secs(3), |o| o
            .lines()
            .any(|l| l == "[INFO] glob-one other.example.org.")),
        "{}",
        s.output()
    );
    // The example.net block has no whoami: hosts falls through to nothing.
    let r = s.query("other.example.net", Rtype::A);
    assert_eq!(rcode(&r), Rcode::SERVFAIL);
    assert!(section(&r, "additional").is_empty());
    assert!(!s.output().contains("glob-one other.example.net"));
}

#[test]
fn import_of_server_blocks_at_top_level() {
    // Imported files hold whole blocks, on a second port picked here.
    let inc = Scratch::new("import-blocks");
    let port = free_port();
    inc.write(
        "blocks/a.conf",
        &format!("a.example:{port} {{\n    bind 127.0.0.1\n    hosts {{\n        10.0.0.1 x.a.example\n    }}\n}}\n"),
    );
    inc.write(
        "blocks/b.conf",
        &format!("b.example:{port} {{\n    bind 127.0.0.1\n    hosts {{\n        10.0.0.2 x.b.example\n    }}\n}}\n"),
    );
    let corefile = format!(
        "c.example:{{port}} {{\n    bind 127.0.0.1\n    whoami\n}}\nimport {}/blocks/*.conf\n",
        inc.0.display()
    );
    let s = Server::start(&corefile);
    assert!(wait_udp(at([127, 0, 0, 1], port)), "{}", s.output());
    assert_answer(
        &ask(at([127, 0, 0, 1], port), "x.a.example", Rtype::A),
        &["x.a.example. 3600 IN A 10.0.0.1"],
    );
    assert_answer(
        &ask(at([127, 0, 0, 1], port), "x.b.example", Rtype::A),
        &["x.b.example. 3600 IN A 10.0.0.2"],
    );
    assert_whoami(&s.query("x.c.example", Rtype::A), "x.c.example");
}

#[test]
fn import_errors_name_file_and_line() {
    assert_rejected(
        "example.org {\n    bind 127.0.0.1\n    whoami\n    import missing.conf\n}\n",
        &[],
        "Corefile:4 - Error during parsing: File to import not found: missing.conf",
    );
    // An error inside an imported file names that file.
    assert_rejected(
        "example.org {\n    bind 127.0.0.1\n    import inc.conf\n}\n",
        &[("inc.conf", "whoami\n\nbogus\n")],
        "inc.conf:3 - Error during parsing: Unknown directive 'bogus'",
    );
    // A glob matching nothing is only a warning.
    let (code, out, err) = check(
        "example.org {\n    bind 127.0.0.1\n    whoami\n    import none/*.conf\n}\n",
        &[],
    );
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (
            0,
            "[WARNING] Corefile:4 - No files matching import glob pattern: none/*.conf\nCorefile OK\n",
            ""
        )
    );
    // An unknown snippet is a file that does not exist.
    assert_rejected(
        "(common) {\n    whoami\n}\nexample.org {\n    bind 127.0.0.1\n    import commn\n}\n",
        &[],
        "Corefile:6 - Error during parsing: File to import not found: commn",
    );
}

#[test]
fn imports_and_the_corefile_are_bounded() {
    // A device, a directory: refused before a byte is read.
    assert_rejected(
        "example.org {\n    bind 127.0.0.1\n    whoami\n    import /dev/zero\n}\n",
        &[],
        "Corefile:4 - Error during parsing: Could not import /dev/zero: not a regular file (a character device)",
    );
    assert_rejected(
        "example.org {\n    bind 127.0.0.1\n    import /\n}\n",
        &[],
        "Corefile:3 - Error during parsing: Could not import /: not a regular file (a directory)",
    );
    // `-conf stdin` reads through the same 1 MiB cap as a file.
    let dir = Scratch::new("stdin-cap");
    // Just over (the writer must not outlive the reader by more than a pipe's worth).
    let big = format!("example.org {{\n    whoami\n}}\n{}", "# padding\n".repeat(104_860));
    assert!(big.len() > 1 << 20 && big.len() < (1 << 20) + 1000);
    let (code, out, err) = run(&["-check", "-conf", "stdin"], &dir.0, Some(&big));
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (1, "", "stdin: larger than 1 MiB\n")
    );
    // The Corefile itself must be a regular file.
    let (code, _, err) = run(&["-check", "-conf", "/dev/zero"], &dir.0, None);
    assert_eq!(
        (code, err.as_str()),
        (1, "/dev/zero: not a regular file (a character device)\n")
    );
}

// ---------------------------------------------------------------------------------
// Errors

#[test]
fn unknown_directive_is_an_error() {
    assert_rejected(
        "example.org {\n    bind 127.0.0.1\n    frobnicate on\n}\n",
        &[],
        "Corefile:3 - Error during parsing: Unknown directive 'frobnicate'",
    );
}

#[test]
fn coredns_plugin_that_clusterdns_lacks_is_an_error() {
    assert_rejected(
        "example.org {\n    bind 127.0.0.1\n    whoami\n\n    dnssec\n}\n",
        &[],
        "Corefile:5 - Error during parsing: plugin 'dnssec' is not supported by clusterdns",
    );
}

#[test]
fn removed_and_external_coredns_plugins_say_why_at_start_up() {
    // What a CoreDNS user migrating a Corefile meets: the plugin's fate, not only
    // "Unknown directive".
    assert_rejected(
        "example.org {\n    bind 127.0.0.1\n    proxy . 127.0.0.1:53\n}\n",
        &[],
        "Corefile:3 - Error during parsing: Unknown directive 'proxy': removed from CoreDNS in 1.5.0; use 'forward'",
    );
    assert_rejected(
        "example.org {\n    bind 127.0.0.1\n    whoami\n    k8s_gateway example.org\n}\n",
        &[],
        "Corefile:4 - Error during parsing: Unknown directive 'k8s_gateway': an external CoreDNS plugin, not built into clusterdns",
    );
}

#[test]
fn plugin_used_twice_is_an_error() {
    assert_rejected(
        "example.org {\n    bind 127.0.0.1\n    whoami\n    log\n    whoami\n}\n",
        &[],
        "Corefile:5 - whoami: this plugin can only be used once per Server Block",
    );
}

#[test]
fn bad_plugin_option_is_an_error() {
    assert_rejected(
        "example.org {\n    bind 127.0.0.1\n    hosts {\n        10.0.0.1 a.example.org\n        frobnicate\n    }\n}\n",
        &[],
        "Corefile:5 - hosts: unknown property 'frobnicate'",
    );
    assert_rejected(
        "example.org {\n    bind 127.0.0.1\n    whoami extra\n}\n",
        &[],
        "Corefile:3 - whoami: Wrong argument count or unexpected line ending after 'extra'",
    );
    assert_rejected(
        "example.org {\n    bind 127.0.0.1\n    timeouts {\n        idle 0s\n    }\n}\n",
        &[],
        "Corefile:4 - timeouts: idle timeout must be a duration between 1s and 24h",
    );
}

#[test]
fn duplicate_zone_is_an_error() {
    assert_rejected(
        "example.org:1053 {\n    bind 127.0.0.1\n    whoami\n}\n\nexample.org:1053 {\n    bind 127.0.0.1\n    whoami\n}\n",
        &[],
        "Corefile:6 - cannot serve dns://example.org.:1053 - it is already defined",
    );
    // Same zone, other port: fine.
    let (code, out, err) = check(
        "example.org:1053 {\n    bind 127.0.0.1\n    whoami\n}\nexample.org:1054 {\n    bind 127.0.0.1\n    whoami\n}\n",
        &[],
    );
    assert_eq!((code, out.as_str(), err.as_str()), (0, "Corefile OK\n", ""));
}

#[test]
fn duplicate_zone_is_reported_even_when_the_first_block_is_invalid() {
    // -check promises every error; the key is a duplicate whatever its block holds.
    let (code, _, err) = check(
        "example.org:1053 {\n    bind 127.0.0.1\n    frobnicate\n}\nexample.org:1053 {\n    bind 127.0.0.1\n    whoami\n}\n",
        &[],
    );
    assert_eq!(code, 1);
    assert_eq!(
        err,
        "Corefile:3 - Error during parsing: Unknown directive 'frobnicate'\n\
         Corefile:5 - cannot serve dns://example.org.:1053 - it is already defined\n"
    );
}

// ---------------------------------------------------------------------------------
// Routing

const ROUTING: &str = "\
example.org:{port} {
    bind 127.0.0.1
    hosts {
        10.0.0.1 a.example.org
        10.0.0.2 a.sub.example.org
        10.0.0.5 xsub.example.org
    }
}
sub.example.org:{port} {
    bind 127.0.0.1
    hosts {
        10.0.0.3 a.sub.example.org
        10.0.0.4 sub.example.org
    }
}
";

#[test]
fn longest_matching_zone_wins() {
    let s = Server::start(ROUTING);
    assert_answer(
        &s.query("a.example.org", Rtype::A),
        &["a.example.org. 3600 IN A 10.0.0.1"],
    );
    // The sub block, though the parent has the name too.
    assert_answer(
        &s.query("a.sub.example.org", Rtype::A),
        &["a.sub.example.org. 3600 IN A 10.0.0.3"],
    );
    assert_answer(
        &s.query("sub.example.org", Rtype::A),
        &["sub.example.org. 3600 IN A 10.0.0.4"],
    );
    // Case does not matter.
    assert_answer(
        &s.query("A.SUB.Example.ORG", Rtype::A),
        &["A.SUB.Example.ORG. 3600 IN A 10.0.0.3"],
    );
    // Zones match on label boundaries: `xsub.example.org` is the parent's.
    assert_answer(
        &s.query("xsub.example.org", Rtype::A),
        &["xsub.example.org. 3600 IN A 10.0.0.5"],
    );
    // Over TCP the same.
    assert_answer(
        &s.query_tcp("a.sub.example.org", Rtype::A),
        &["a.sub.example.org. 3600 IN A 10.0.0.3"],
    );
    // Under neither zone: REFUSED.
    for name in ["example.com", "org", "."] {
        let r = s.query(name, Rtype::A);
        assert_eq!(rcode(&r), Rcode::REFUSED, "{name}");
        assert!(answer(&r).is_empty());
    }
}

#[test]
fn root_block_catches_the_rest() {
    let s = Server::start(&format!("{ROUTING}.:{{port}} {{\n    bind 127.0.0.1\n    whoami\n}}\n"));
    assert_answer(
        &s.query("a.sub.example.org", Rtype::A),
        &["a.sub.example.org. 3600 IN A 10.0.0.3"],
    );
    assert_answer(
        &s.query("a.example.org", Rtype::A),
        &["a.example.org. 3600 IN A 10.0.0.1"],
    );
    assert_whoami(&s.query("example.com", Rtype::A), "example.com");
    assert_whoami(&s.query("org", Rtype::A), "org");
}

/// The sockets bound to local `port` on 127.0.0.1: (UDP, listening TCP).
fn sockets_on(port: u16) -> (usize, usize) {
    let suffix = format!("0100007F:{port:04X}");
    let count = |file: &str, state: Option<&str>| {
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[1] == suffix && state.is_none_or(|s| f[3] == s)
            })
            .count()
    };
    (count("/proc/net/udp", None), count("/proc/net/tcp", Some("0A")))
}

#[test]
fn blocks_on_one_port_share_its_sockets() {
    let s = Launch::new(ROUTING).arg("-workers").arg("2").start();
    assert_answer(
        &s.query("a.example.org", Rtype::A),
        &["a.example.org. 3600 IN A 10.0.0.1"],
    );
    assert_answer(
        &s.query("a.sub.example.org", Rtype::A),
        &["a.sub.example.org. 3600 IN A 10.0.0.3"],
    );
    // One UDP socket and one TCP listener per worker, not per block.
    assert_eq!(sockets_on(s.port), (2, 2));
}

// ---------------------------------------------------------------------------------
// Plugin order

#[test]
fn plugins_run_in_corednss_order_not_the_corefiles() {
    let s = Server::start(
        "example.org:{port} {\n    bind 127.0.0.1\n    whoami\n    hosts {\n        10.0.0.9 x.example.org\n        fallthrough\n    }\n}\n",
    );
    // hosts runs before whoami, though listed after it.
    let r = s.query("x.example.org", Rtype::A);
    assert_answer(&r, &["x.example.org. 3600 IN A 10.0.0.9"]);
    assert!(section(&r, "additional").is_empty(), "{:?}", section(&r, "additional"));
    // What hosts does not have falls through to whoami.
    assert_whoami(&s.query("y.example.org", Rtype::A), "y.example.org");
}

#[test]
fn log_sees_what_a_later_listed_plugin_answered() {
    // log comes before hosts in CoreDNS's order, so it logs the answer hosts gave, even
    // when the Corefile lists it last.
    let s = Server::start(
        "example.org:{port} {\n    bind 127.0.0.1\n    hosts {\n        10.0.0.1 a.example.org\n    }\n    log . \"order {name} {rcode} {rsize}\"\n}\n",
    );
    let r = s.query("a.example.org", Rtype::A);
    assert_answer(&r, &["a.example.org. 3600 IN A 10.0.0.1"]);
    let want = format!("[INFO] order a.example.org. NOERROR {}", r.as_slice().len());
    assert!(
        s.wait_output(Duration::from_secs(3), |o| o.lines().any(|l| l == want)),
        "{want}\n{}",
        s.output()
    );
}

// ---------------------------------------------------------------------------------
// bind

#[test]
fn bind_restricts_the_addresses() {
    let mut s = Launch::new(
        "a.example.org:{port} {\n    bind 127.0.0.1\n    hosts {\n        10.0.0.1 x.a.example.org\n    }\n}\n\
         b.example.org:{port} {\n    bind 127.0.0.2\n    hosts {\n        10.0.0.2 x.b.example.org\n    }\n}\n",
    )
    .start();
    let one = at([127, 0, 0, 1], s.port);
    let two = at([127, 0, 0, 2], s.port);
    assert!(wait_udp(two), "{}", s.output());
    assert_answer(
        &ask(one, "x.a.example.org", Rtype::A),
        &["x.a.example.org. 3600 IN A 10.0.0.1"],
    );
    assert_answer(
        &ask(two, "x.b.example.org", Rtype::A),
        &["x.b.example.org. 3600 IN A 10.0.0.2"],
    );
    // Each address only routes to its own blocks.
    assert_eq!(rcode(&ask(one, "x.b.example.org", Rtype::A)), Rcode::REFUSED);
    assert_eq!(rcode(&ask(two, "x.a.example.org", Rtype::A)), Rcode::REFUSED);
    // Nothing on other loopback addresses.
    assert!(
        raw_udp(
            at([127, 0, 0, 3], s.port),
            &query_bytes("x.a.example.org", Rtype::A, None, 9),
            Duration::from_millis(300)
        )
        .is_none()
    );
    assert!(s.wait_output(Duration::from_secs(3), |o| {
        o.contains(&format!("b.example.org.:{} on 127.0.0.2", s.port))
    }));
    s.signal(libc::SIGTERM);
    assert_eq!(s.wait_exit(Duration::from_secs(5)), Some(0));
}

/// Sends one query from an unconnected socket on 127.0.0.1 to each address and returns
/// where each reply came from (an unconnected socket sees any source).
fn reply_sources(to: &[SocketAddr]) -> Vec<SocketAddr> {
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 4096];
    to.iter()
        .enumerate()
        .map(|(i, addr)| {
            let id = 0x4000 + i as u16;
            sock.send_to(&query_bytes("x.example.org", Rtype::A, Some(1232), id), addr)
                .unwrap();
            loop {
                let (n, from) = sock.recv_from(&mut buf).expect("a reply");
                if buf[..n].len() >= 2 && u16::from_be_bytes([buf[0], buf[1]]) == id {
                    return from;
                }
            }
        })
        .collect()
}

#[test]
fn a_reply_comes_from_the_address_the_query_was_sent_to() {
    // A wildcard socket learns each datagram's destination and answers from it; sockets
    // bound to one address each answer from theirs. Either way a client that checks
    // the source (a connected socket, a stub resolver) takes the reply.
    for bind in ["0.0.0.0", "127.0.0.2 127.0.0.3"] {
        let s = Launch::new(&format!(
            "example.org:{{port}} {{\n    bind {bind}\n    hosts {{\n        10.0.0.2 x.example.org\n    }}\n}}\n"
        ))
        .no_wait()
        .start();
        let (two, three) = (at([127, 0, 0, 2], s.port), at([127, 0, 0, 3], s.port));
        assert!(wait_udp(two) && wait_udp(three), "{bind}: {}", s.output());
        // Several rounds, each from a new source port, so that every worker's socket is
        // almost surely met (SO_REUSEPORT picks one by the addresses and ports).
        for _ in 0..8 {
            assert_eq!(
                reply_sources(&[three, two, three]),
                vec![three, two, three],
                "bind {bind}"
            );
        }
        assert_answer(
            &ask(three, "x.example.org", Rtype::A),
            &["x.example.org. 3600 IN A 10.0.0.2"],
        );
    }
}

#[test]
fn a_block_bound_elsewhere_gets_no_socket_on_127_0_0_1() {
    let s = Launch::new(
        "example.org:{port} {\n    bind 127.0.0.2\n    hosts {\n        10.0.0.2 x.example.org\n    }\n}\n",
    )
    .no_wait()
    .start();
    let two = at([127, 0, 0, 2], s.port);
    assert!(wait_udp(two), "{}", s.output());
    assert_answer(
        &ask(two, "x.example.org", Rtype::A),
        &["x.example.org. 3600 IN A 10.0.0.2"],
    );
    assert_answer(
        &tcp_exchange(two, &query_bytes("x.example.org", Rtype::A, None, 1)),
        &["x.example.org. 3600 IN A 10.0.0.2"],
    );
    // 127.0.0.1 has no socket at all: no reply over UDP, refused over TCP.
    assert!(
        s.raw_udp(
            &query_bytes("x.example.org", Rtype::A, None, 2),
            Duration::from_millis(300)
        )
        .is_none()
    );
    assert!(TcpStream::connect_timeout(&s.addr(), Duration::from_millis(300)).is_err());
}

#[test]
fn bind_accepts_an_interface_name() {
    let s = Server::start("example.org:{port} {\n    bind lo\n    hosts {\n        10.0.0.1 a.example.org\n    }\n}\n");
    assert_answer(
        &s.query("a.example.org", Rtype::A),
        &["a.example.org. 3600 IN A 10.0.0.1"],
    );
    assert!(
        s.wait_output(Duration::from_secs(3), |o| o
            .contains(&format!("example.org.:{} on 127.0.0.1", s.port))),
        "{}",
        s.output()
    );
    // The interface's IPv6 loopback too, when the host has one.
    if s.output()
        .contains(&format!("example.org.:{} on 127.0.0.1, ::1", s.port))
    {
        let v6 = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, s.port));
        assert_answer(
            &ask(v6, "a.example.org", Rtype::A),
            &["a.example.org. 3600 IN A 10.0.0.1"],
        );
    }
}

#[test]
fn bind_with_nothing_left_after_except_is_an_error() {
    assert_rejected(
        "example.org {\n    bind 127.0.0.1 {\n        except 127.0.0.1\n    }\n    whoami\n}\n",
        &[],
        "Corefile:2 - bind: no address left to bind to after 'except'",
    );
    assert_rejected(
        "example.org {\n    bind 127.0.0.1 no-such-interface0\n    whoami\n}\n",
        &[],
        "Corefile:2 - bind: not a valid IP address or interface name: 'no-such-interface0'",
    );
}

// ---------------------------------------------------------------------------------
// timeouts

/// Opens a TCP connection, asks one query, and returns it.
fn connected(s: &Server) -> TcpStream {
    let mut c = TcpStream::connect(s.addr()).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    write_frame(&mut c, &query_bytes("a.example.org", Rtype::A, None, 11));
    let r = Message::from_octets(read_frame(&mut c).expect("reply")).unwrap();
    assert_answer(&r, &["a.example.org. 3600 IN A 10.0.0.1"]);
    c
}

const IDLE_1S: &str = "example.org:{port} {\n    bind 127.0.0.1\n    timeouts {\n        idle 1s\n    }\n    hosts {\n        10.0.0.1 a.example.org\n    }\n}\n";

/// Waits (3 s at most) for the server to close `c`; returns how long that took.
fn closed_after(c: &mut TcpStream) -> Result<Duration, String> {
    // Generous: under a loaded test run the worker may take its sockets in hand late;
    // what matters is 1 s rather than the default 10 s.
    c.set_read_timeout(Some(Duration::from_secs(6))).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 16];
    loop {
        match c.read(&mut buf) {
            Ok(0) => return Ok(start.elapsed()),
            // A read with a timeout is not restarted after a signal, or after the test
            // process was stopped and continued (seen under a loaded run): read on.
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {
                let left = Duration::from_secs(6).saturating_sub(start.elapsed());
                c.set_read_timeout(Some(left.max(Duration::from_millis(1)))).unwrap();
            }
            other => return Err(format!("expected EOF, got {other:?} after {:?}", start.elapsed())),
        }
    }
}

#[test]
fn timeouts_idle_closes_idle_tcp_connections() {
    // One worker, that has certainly taken its TCP listener in hand (a TCP query went
    // through) before the connection measured here is opened: see
    // `timeouts_apply_to_connections_queued_at_start_up`.
    let s = Launch::new(IDLE_1S).arg("-workers").arg("1").start();
    assert_answer(
        &s.query_tcp("a.example.org", Rtype::A),
        &["a.example.org. 3600 IN A 10.0.0.1"],
    );
    // After a query.
    let mut c = connected(&s);
    let took = closed_after(&mut c).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(2500),
        "closed after {took:?}"
    );
    // And without one.
    let mut c = TcpStream::connect(s.addr()).unwrap();
    let took = closed_after(&mut c).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        took >= Duration::from_millis(800) && took < Duration::from_millis(2500),
        "closed after {took:?}"
    );
}

#[test]
fn timeouts_apply_to_connections_queued_at_start_up() {
    // Connect (and send a UDP query) as early as the sockets exist, so that both wait in
    // the kernel when the worker registers them. Fails on most tries; a few tries.
    for attempt in 0..3 {
        let s = Launch::new(IDLE_1S).arg("-workers").arg("1").no_wait().start();
        let q = query_bytes("a.example.org", Rtype::A, None, 1);
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let end = Instant::now() + Duration::from_secs(10);
        let mut c = loop {
            let _ = udp.send_to(&q, s.addr());
            if let Ok(c) = TcpStream::connect(s.addr()) {
                break c;
            }
            assert!(Instant::now() < end, "never listening: {}", s.output());
        };
        let took = closed_after(&mut c).unwrap_or_else(|e| panic!("attempt {attempt}: idle 1s not applied: {e}"));
        assert!(
            took < Duration::from_secs(6),
            "attempt {attempt}: closed after {took:?}"
        );
    }
}

#[test]
fn without_timeouts_an_idle_tcp_connection_stays_open() {
    let s = Server::start(
        "example.org:{port} {\n    bind 127.0.0.1\n    hosts {\n        10.0.0.1 a.example.org\n    }\n}\n",
    );
    let mut c = connected(&s);
    c.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut buf = [0u8; 16];
    match c.read(&mut buf) {
        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
        other => panic!("connection not idle-open for 2s: {other:?}"),
    }
    // Still usable.
    write_frame(&mut c, &query_bytes("a.example.org", Rtype::A, None, 12));
    let r = Message::from_octets(read_frame(&mut c).expect("reply on the same connection")).unwrap();
    assert_eq!(r.header().id(), 12);
}

// ---------------------------------------------------------------------------------
// A real client

#[test]
#[ignore = "needs dig (bind9-dnsutils); .ci/run runs it: cargo test --locked -- --ignored"]
fn dig_sees_the_hosts_answer_over_udp_and_tcp() {
    testkit::tools::require_dig();
    let s = Server::start(
        "example.org:{port} {\n    bind 127.0.0.1\n    hosts {\n        10.0.0.1 a.example.org\n    }\n}\n",
    );
    let port = s.port.to_string();
    for tcp in [false, true] {
        let mut args = vec!["@127.0.0.1", "-p", &port, "a.example.org", "+tries=1", "+time=2"];
        if tcp {
            args.push("+tcp");
        }
        let out = testkit::tools::dig(&args);
        assert!(out.contains("status: NOERROR"), "tcp={tcp}:\n{out}");
        assert!(
            out.contains(";; flags: qr aa rd; QUERY: 1, ANSWER: 1, AUTHORITY: 0, ADDITIONAL: 1"),
            "tcp={tcp}:\n{out}"
        );
        assert!(
            out.contains("; EDNS: version: 0, flags:; udp: 1232"),
            "tcp={tcp}:\n{out}"
        );
        let answers: Vec<Vec<&str>> = out
            .lines()
            .filter(|l| !l.starts_with(';') && !l.trim().is_empty())
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            answers,
            vec![vec!["a.example.org.", "3600", "IN", "A", "10.0.0.1"]],
            "tcp={tcp}:\n{out}"
        );
        assert!(
            out.contains(&format!(";; SERVER: 127.0.0.1#{port}(127.0.0.1)")),
            "tcp={tcp}:\n{out}"
        );
    }
}
