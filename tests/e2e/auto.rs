//! The `auto` plugin end to end: the zone files of a directory served by the real
//! binary, a file added and one removed picked up by the periodic scan (plugin/auto
//! README, "Description" and `reload`; walk_test.go, watcher_test.go).

use std::time::Duration;

use domain::base::iana::{Rcode, Rtype};

use testkit::prelude::*;

fn zone(origin: &str, serial: u32, addr: &str) -> String {
    format!(
        "$ORIGIN {origin}.\n$TTL 300\n@ IN SOA ns1 hostmaster {serial} 7200 3600 1209600 60\n  IN NS ns1\nns1 IN A 192.0.2.53\nwww IN A {addr}\n"
    )
}

#[test]
fn auto_serves_a_directory_and_follows_files_added_changed_and_removed() {
    let dir = Scratch::new("auto");
    dir.write("zones/db.example.org", &zone("example.org", 1, "192.0.2.1"));
    dir.write("zones/notes.txt", "not a zone");
    let s = Server::start(&format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    auto {{\n        directory {}/zones\n        reload 200ms\n    }}\n}}\n",
        dir.0.display()
    ));
    // Over UDP, then TCP: the two agree once the scan has settled (checked after each
    // wait; a scan may land between the two queries of one call).
    let www = |name: &str| {
        let q = query_bytes(name, Rtype::A, Some(1232), 0x5555);
        let (udp, tcp) = (udp_exchange(s.addr(), &q), tcp_exchange(s.addr(), &q));
        let pair = |m: &domain::base::Message<Vec<u8>>| (rcode(m), section(m, "answer"));
        (pair(&udp), pair(&tcp))
    };
    let settled = |name: &str| {
        let (udp, tcp) = www(name);
        assert_eq!(udp, tcp, "{name}: UDP and TCP differ");
        udp
    };
    // The default pattern `db\.(.*)` and template `{1}`: db.example.org serves example.org.
    assert_eq!(
        settled("www.example.org"),
        (Rcode::NOERROR, vec!["www.example.org. 300 IN A 192.0.2.1".to_string()])
    );
    // A file added is picked up by the next scan.
    dir.write("zones/db.example.net", &zone("example.net", 1, "192.0.2.2"));
    wait_until("example.net served", Duration::from_secs(10), || {
        www("www.example.net").1.1 == ["www.example.net. 300 IN A 192.0.2.2"]
    });
    assert_eq!(settled("www.example.net").1, ["www.example.net. 300 IN A 192.0.2.2"]);
    // A zone already served is read again when its serial changes.
    dir.write("zones/db.example.org", &zone("example.org", 2, "192.0.2.3"));
    wait_until("example.org reloaded", Duration::from_secs(10), || {
        www("www.example.org").1.1 == ["www.example.org. 300 IN A 192.0.2.3"]
    });
    assert_eq!(settled("www.example.org").1, ["www.example.org. 300 IN A 192.0.2.3"]);
    // A file removed: its zone is dropped (no other plugin: SERVFAIL).
    std::fs::remove_file(dir.0.join("zones/db.example.net")).unwrap();
    wait_until("example.net dropped", Duration::from_secs(10), || {
        www("www.example.net").1.0 != Rcode::NOERROR
    });
    assert_eq!(settled("www.example.net").0, Rcode::SERVFAIL);
    assert_eq!(settled("www.example.org").0, Rcode::NOERROR);
    s.wait_lines("Deleting zone `example.net.'", 1, Duration::from_secs(5));
}
