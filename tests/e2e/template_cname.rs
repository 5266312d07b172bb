//! A template that answers with a CNAME: the server resolves the target and appends
//! its records, as CoreDNS's template does (template.go: `upstream.Lookup` for A and
//! AAAA questions; cname_test.go TestTruncatedCNAME), for a target the kubernetes
//! plugin answers and for one the forward plugin sends upstream.

use domain::base::iana::Rtype;

use testkit::prelude::*;
use testkit::wire::addresses;

#[test]
fn a_templated_cname_is_followed_by_the_targets_records() {
    let api = FakeApi::with_objects(base_cluster());
    let up = FakeUpstream::start();
    let text = format!(
        ".:{{port}} {{\n    bind 127.0.0.1\n    template IN ANY alias.example {{\n        \
         match ^web[.]alias[.]example[.]$\n        \
         answer \"{{{{ .Name }}}} 60 IN CNAME web.team-a.svc.cluster.local.\"\n        \
         fallthrough\n    }}\n    template IN ANY alias.example {{\n        \
         match ^out[.]alias[.]example[.]$\n        \
         answer \"{{{{ .Name }}}} 60 IN CNAME vm1.abcdef.internal.cloudapp.net.\"\n    }}\n    \
         kubernetes cluster.local {{\n        endpoint {}\n    }}\n    forward . {}\n}}\n",
        api.url(),
        up.addr()
    );
    let s = Launch::new(&text).no_wait().start();
    s.wait_answering("kubernetes.default.svc.cluster.local");
    let probe = query_bytes("web.team-a.svc.cluster.local", Rtype::A, Some(1232), 1);
    wait_until("the cluster's names", std::time::Duration::from_secs(15), || {
        addresses(&udp_exchange(s.addr(), &probe)) == ["10.96.1.1"]
    });
    for (name, want) in [
        // The kubernetes plugin answers the target.
        ("web.alias.example", "10.96.1.1"),
        // The target is outside every zone here: forward answers it.
        ("out.alias.example", "192.0.2.1"),
    ] {
        let q = query_bytes(name, Rtype::A, Some(1232), 0x4321);
        for reply in [udp_exchange(s.addr(), &q), tcp_exchange(s.addr(), &q)] {
            let answer = section(&reply, "answer");
            assert_eq!(answer.len(), 2, "{name}: {answer:?}");
            assert!(answer[0].contains("CNAME"), "{name}: {answer:?}");
            assert_eq!(addresses(&reply), [want], "{name}: {answer:?}");
        }
    }
    // A TXT question gets the CNAME alone (CoreDNS follows A and AAAA only).
    let q = query_bytes("web.alias.example", Rtype::TXT, Some(1232), 7);
    let answer = section(&udp_exchange(s.addr(), &q), "answer");
    assert_eq!(answer.len(), 1, "{answer:?}");
}
