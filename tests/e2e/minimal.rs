//! `minimal` end to end: positive answers lose their authority and additional
//! sections, over UDP and TCP; denials and delegations keep them; a reply cut for its
//! additional records fits whole once minimal (no TC).

use domain::base::Message;
use domain::base::iana::{Rcode, Rtype};

use testkit::prelude::*;

/// example.org answered by templates: `www` (an answer with NS and glue), `deleg` (a
/// delegation), `gone` (NXDOMAIN with the SOA), `big` (an answer with 40 glue records),
/// AAAA for `www` (NODATA with the SOA).
fn corefile(minimal: bool) -> String {
    let soa = "example.org. 60 IN SOA ns1.example.org. hostmaster.example.org. (1 60 60 60 60)";
    let glue: String = (1..=40)
        .map(|i| format!("        additional \"ns{i}.example.org. 60 IN A 192.0.2.{i}\"\n"))
        .collect();
    format!(
        "example.org:{{port}} {{\n    bind 127.0.0.1\n    {}\n\
         template IN A www.example.org {{\n        answer \"www.example.org. 60 IN A 192.0.2.80\"\n        authority \"example.org. 60 IN NS ns1.example.org.\"\n        additional \"ns1.example.org. 60 IN A 192.0.2.53\"\n    }}\n\
         template IN AAAA www.example.org {{\n        authority \"{soa}\"\n    }}\n\
         template IN A deleg.example.org {{\n        authority \"deleg.example.org. 60 IN NS ns.deleg.example.org.\"\n        additional \"ns.deleg.example.org. 60 IN A 192.0.2.54\"\n    }}\n\
         template IN A gone.example.org {{\n        rcode NXDOMAIN\n        authority \"{soa}\"\n        additional \"ns1.example.org. 60 IN A 192.0.2.53\"\n    }}\n\
         template IN A big.example.org {{\n        answer \"big.example.org. 60 IN A 192.0.2.81\"\n{glue}    }}\n}}\n",
        if minimal { "minimal" } else { "" }
    )
}

fn both(s: &Server, name: &str, qtype: Rtype, edns: Option<u16>) -> [Message<Vec<u8>>; 2] {
    let q = query_bytes(name, qtype, edns, 0x6d6d);
    [udp_exchange(s.addr(), &q), tcp_exchange(s.addr(), &q)]
}

/// README "Description" (minimal_test.go's TestMinimizeResponse cases): a successful
/// reply that is no delegation keeps only its answers; NXDOMAIN, NODATA and a
/// delegation are written whole.
#[test]
fn only_positive_answers_are_cut_down() {
    let s = Server::start(&corefile(true));
    for m in both(&s, "www.example.org", Rtype::A, Some(1232)) {
        assert_eq!(rcode(&m), Rcode::NOERROR);
        assert_eq!(section(&m, "answer"), ["www.example.org. 60 IN A 192.0.2.80"]);
        assert_eq!(counts(&m), (1, 1, 0, 1), "the OPT record stays");
        assert!(m.opt().is_some());
    }
    for m in both(&s, "deleg.example.org", Rtype::A, Some(1232)) {
        assert_eq!(
            section(&m, "authority"),
            ["deleg.example.org. 60 IN NS ns.deleg.example.org."]
        );
        assert_eq!(section(&m, "additional"), ["ns.deleg.example.org. 60 IN A 192.0.2.54"]);
    }
    for m in both(&s, "gone.example.org", Rtype::A, Some(1232)) {
        assert_eq!(rcode(&m), Rcode::NXDOMAIN);
        assert_eq!(
            section(&m, "authority"),
            ["example.org. 60 IN SOA ns1.example.org. hostmaster.example.org. 1 60 60 60 60"]
        );
        assert_eq!(section(&m, "additional"), ["ns1.example.org. 60 IN A 192.0.2.53"]);
    }
    for m in both(&s, "www.example.org", Rtype::AAAA, Some(1232)) {
        assert_eq!(rcode(&m), Rcode::NOERROR);
        assert_eq!(counts(&m).1, 0);
        assert_eq!(section(&m, "authority").len(), 1);
    }
}

/// Without EDNS (512 bytes) the 40 glue records do not fit: without minimal the reply
/// has TC and what fit; with it, the answer alone and no TC (CoreDNS truncates the
/// minimal reply, which fits).
#[test]
fn a_reply_cut_in_its_glue_fits_once_minimal() {
    let plain = Server::start(&corefile(false));
    let [udp, tcp] = both(&plain, "big.example.org", Rtype::A, None);
    assert!(udp.header().tc());
    assert_eq!(section(&tcp, "additional").len(), 40);
    // The same server with minimal: the whole reply is the answer.
    let s = Server::start(&corefile(true));
    for m in both(&s, "big.example.org", Rtype::A, None) {
        assert!(!m.header().tc());
        assert_eq!(section(&m, "answer"), ["big.example.org. 60 IN A 192.0.2.81"]);
        assert_eq!(counts(&m), (1, 1, 0, 0));
    }
    for m in both(&s, "www.example.org", Rtype::A, None) {
        assert_eq!(counts(&m), (1, 1, 0, 0));
    }
}
