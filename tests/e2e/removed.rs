//! Directives a CoreDNS user may still have that cannot run: plugins CoreDNS removed,
//! options it removed from kubernetes, plugins from outside CoreDNS's tree. Each is a
//! start-up error at its FILE:LINE that says what happened and what to do, checked
//! through the real binary's `-check` and start.

use testkit::prelude::*;

/// `-check` and a start on `text`: both fail with status 1 and exactly `want` on stderr.
#[track_caller]
fn rejected(text: &str, want: &str) {
    let dir = Scratch::new("removed");
    dir.write("Corefile", text);
    let (code, out, err) = run(&["-check", "-conf", "Corefile"], &dir.0, None);
    assert_eq!(
        (code, out.as_str(), err.as_str()),
        (1, "", format!("{want}\n").as_str()),
        "{text}"
    );
    let (code, _, err) = run(&["-conf", "Corefile", "-quiet"], &dir.0, None);
    assert_eq!((code, err.as_str()), (1, format!("{want}\n").as_str()), "{text}");
}

#[test]
fn proxy_names_forward() {
    // CoreDNS moved proxy out of its tree in 1.5.0 (notes/coredns-1.5.0.md).
    rejected(
        ".:1053 {\n    errors\n    proxy . 8.8.8.8:53\n}\n",
        "Corefile:3 - Error during parsing: Unknown directive 'proxy': removed from CoreDNS in 1.5.0; use 'forward'",
    );
}

#[test]
fn federation_names_its_replacement() {
    // CoreDNS removed federation in 1.7.0 (notes/coredns-1.7.0.md); multi-cluster names
    // are kubernetes' `multicluster` (its README, "Configure multicluster").
    rejected(
        "cluster.local:1053 {\n    kubernetes cluster.local\n    federation cluster.local {\n        prod prod.feddomain.com\n    }\n}\n",
        "Corefile:3 - Error during parsing: Unknown directive 'federation': removed from CoreDNS in 1.7.0 \
         with Kubernetes Federation v1; names across clusters now come from the Multi-Cluster Services \
         API (clusterset.local), which CoreDNS serves with the kubernetes plugin's 'multicluster' option \
         (not in clusterdns yet)",
    );
}

#[test]
fn kubernetes_options_removed_in_1_7_say_they_can_be_deleted() {
    // notes/coredns-1.7.0.md: "Remove already-deprecated options `resyncperiod` and
    // `upstream`"; a Corefile of the kubeadm 1.1x era still has both.
    for (line, name) in [
        ("upstream", "upstream"),
        ("upstream 8.8.8.8", "upstream"),
        ("resyncperiod 30s", "resyncperiod"),
    ] {
        rejected(
            &format!(
                ".:1053 {{\n    errors\n    kubernetes cluster.local {{\n        pods insecure\n        {line}\n    }}\n}}\n"
            ),
            &format!(
                "Corefile:5 - kubernetes: unknown property '{name}': removed from CoreDNS in 1.7.0, where it \
                 had no effect; delete the line"
            ),
        );
    }
    // notes/coredns-1.8.0.md: outgoing transfers moved to the transfer plugin.
    rejected(
        ".:1053 {\n    kubernetes cluster.local {\n        transfer to *\n    }\n}\n",
        "Corefile:3 - kubernetes: unknown property 'transfer': removed from CoreDNS in 1.8.0; zone transfers \
         are configured with the 'transfer' plugin",
    );
}

#[test]
fn an_external_plugin_is_named_as_one() {
    // coredns.io/explugins: plugins compiled into CoreDNS by those who want them.
    for (directive, name) in [
        ("k8s_gateway example.com", "k8s_gateway"),
        ("fanout . 10.0.0.10 10.0.0.11", "fanout"),
        ("alternate SERVFAIL . 8.8.8.8", "alternate"),
    ] {
        rejected(
            &format!(".:1053 {{\n    errors\n\n    {directive}\n}}\n"),
            &format!(
                "Corefile:4 - Error during parsing: Unknown directive '{name}': an external CoreDNS plugin, not \
                 built into clusterdns"
            ),
        );
    }
    // A name nobody has is CoreDNS's error alone.
    rejected(
        ".:1053 {\n    frobnicate\n}\n",
        "Corefile:2 - Error during parsing: Unknown directive 'frobnicate'",
    );
}

#[test]
fn reverse_names_template() {
    // notes/coredns-1.1.4.md: reverse removed; template's README synthesises such names.
    rejected(
        ".:1053 {\n    reverse 10.0.0.0/8 {\n        hostname ip-{ip}.{zone[1]}\n    }\n}\n",
        "Corefile:2 - Error during parsing: Unknown directive 'reverse': removed from CoreDNS in 1.2.0; \
         'template' answers names made from addresses, PTR included",
    );
}
