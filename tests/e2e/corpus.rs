//! The Corefile corpus as a whole (tests/data/corefiles/, one file per shape real
//! clusters run): `-check` accepts every file, and every file is started
//! against the fake API and queried over UDP and TCP by a test named in [`SHAPES`].

use testkit::corpus;
use testkit::prelude::*;

/// Each corpus file, the shape it stands for, and the test (module, function) that
/// starts it with `testkit::corpus::Corpus::load` and asks it over UDP and TCP.
const SHAPES: &[(&str, &str, &str, &str)] = &[
    (
        "aks-template.Corefile",
        "AKS's default: templates NXDOMAIN search-path junk",
        "template",
        "the_aks_shape_nxdomains_search_path_junk_and_serves_the_rest",
    ),
    (
        "autopath-docs-example.Corefile",
        "CoreDNS kubernetes README, AutoPath example",
        "autopath",
        "the_readmes_example_completes_a_pods_first_query",
    ),
    (
        "autopath-pods-verified.Corefile",
        "kubeadm-style default with autopath and pods verified",
        "autopath",
        "in_cluster_names_complete_to_the_service_and_count_success",
    ),
    (
        "dns64-ipv6-only.Corefile",
        "an IPv6-only cluster behind NAT64: kubeadm-style default with dns64",
        "dns64",
        "an_ipv6_only_cluster_gets_aaaa_for_an_ipv4_only_service",
    ),
    (
        "file-split-horizon.Corefile",
        "split horizon: an internal zone from a file beside the cluster block",
        "file",
        "the_split_horizon_corefile_answers_the_internal_zone_beside_the_cluster",
    ),
    (
        "gardener-search-path-rewrite.Corefile",
        "Gardener's default with search-path rewrites",
        "rewrite",
        "gardeners_search_path_rewrites_answer_the_first_query",
    ),
    (
        "hardened-acl-errors.Corefile",
        "team: acl against ANY and transfers, consolidated errors, RA by header",
        "acl",
        "a_hardened_cluster_refuses_any_drops_transfers_and_sets_ra",
    ),
    (
        "k8s-external-docs-example.Corefile",
        "CoreDNS k8s_external README, first example",
        "k8s_external",
        "the_readmes_example_resolves_the_example_service_and_a_load_balancer",
    ),
    (
        "k8s-external-docs-fallthrough.Corefile",
        "CoreDNS k8s_external README, fallthrough example",
        "k8s_external",
        "the_readmes_fallthrough_example_passes_unknown_names_to_forward",
    ),
    (
        "k8s-external.Corefile",
        "k8s_external with LoadBalancer Services on a kubeadm-style default",
        "k8s_external",
        "the_corpus_corefile_serves_load_balancers_external_ips_and_headless_services",
    ),
    (
        "kubespray-external-zones.Corefile",
        "kubespray's coredns_external_zones with rewrite items",
        "rewrite",
        "kubesprays_external_zones_rewrite_to_a_service_through_the_cluster_dns",
    ),
    (
        "metadata-client-log.Corefile",
        "team: log lines with the client pod (metadata)",
        "metadata",
        "log_prints_the_client_pod_and_the_name_s_parts",
    ),
    (
        "node-cache-nsid.Corefile",
        "NodeLocal DNSCache's shape with nsid in every block",
        "nsid",
        "the_node_cache_shape_names_the_node_in_every_block",
    ),
    (
        "openshift-default.Corefile",
        "OpenShift's default: bufsize, log class error, a chaos block",
        "chaos",
        "the_openshift_shape_caps_edns_and_withholds_the_version",
    ),
    (
        "openshift-tls-upstream.Corefile",
        "OpenShift's DNS operator with upstream resolvers and a zone's server over TLS",
        "tls",
        "the_openshift_tls_shape_forwards_over_tls_and_serves_the_cluster",
    ),
    (
        "rewrite-cluster-domain-alias.Corefile",
        "team: a cluster-domain alias by rewrite",
        "rewrite",
        "a_cluster_domain_alias_answers_with_the_alias_names",
    ),
    (
        "rewrite-service-answer-auto.Corefile",
        "team: rewrite name ... answer auto to a Service",
        "rewrite",
        "a_public_name_is_answered_by_a_service_under_its_own_name",
    ),
    (
        "secondary-axfr.Corefile",
        "a secondary outside the cluster copies cluster.local by AXFR",
        "transfer",
        "the_corpus_secondary_shape_transfers_the_cluster_zone_through_the_cache",
    ),
    (
        "team-ip-names-template.Corefile",
        "team: names from addresses by template",
        "template",
        "a_team_template_synthesizes_names_from_addresses_both_ways",
    ),
    (
        "team-search-junk-template.Corefile",
        "team: a template NXDOMAINs search-path junk",
        "template",
        "a_team_template_nxdomains_public_names_glued_to_the_search_path",
    ),
    (
        "vcluster-default.Corefile",
        "vcluster's default (rewrite by regex)",
        "rewrite",
        "vclusters_shape_sends_node_names_to_the_kubernetes_service",
    ),
];

/// The "-check accepts each one": every file of the directory, with only what
/// points outside the test made local (ports, the API endpoint, `forward .
/// /etc/resolv.conf`, imported and read files): as written, `-check` would read the
/// host's /etc/resolv.conf (forward refuses one without a nameserver) and whatever
/// /etc/coredns/custom holds, and so depend on the machine it runs on.
#[test]
fn check_accepts_every_corpus_corefile() {
    let files = corpus::files();
    assert!(files.len() >= SHAPES.len(), "{files:?}");
    let api = FakeApi::with_objects(Vec::new());
    let up = FakeUpstream::start();
    for file in &files {
        let local = corpus::Corpus::load(file).api(&api).upstream(&up).localize();
        let text = local.text.replace("{port}", &local.port.to_string());
        let path = local.files.write("Corefile", &text);
        let (code, out, err) = run(&["-check", "-conf", path.to_str().unwrap()], &local.files.0, None);
        assert_eq!(code, 0, "{file}:\n{text}\n{out}{err}");
        assert!(out.ends_with("OK\n"), "{file}: {out}");
    }
}

/// The body of `fn NAME` in tests/e2e/MODULE.rs (up to the next item at column 0).
fn body(module: &str, name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/e2e/{module}.rs"));
    let text = std::fs::read_to_string(&path).unwrap();
    let head = format!("\nfn {name}() {{\n");
    let at = text
        .find(&head)
        .unwrap_or_else(|| panic!("no `fn {name}()` in {}", path.display()));
    let before = &text[..at];
    assert!(
        before.trim_end().ends_with("#[test]"),
        "{module}::{name} is not a #[test]"
    );
    let rest = &text[at + head.len()..];
    rest[..rest.find("\n}\n").unwrap()].to_string()
}

/// Every file of the directory is in [`SHAPES`], and the test named there is a test,
/// loads that file through the kit, and asks over both transports.
#[test]
fn every_corpus_corefile_is_started_and_queried_by_a_test() {
    let named: Vec<&str> = SHAPES.iter().map(|s| s.0).collect();
    assert_eq!(corpus::files(), named, "the corpus directory and SHAPES differ");
    for (file, shape, module, test) in SHAPES {
        // Without white space: rustfmt breaks calls over lines.
        let b: String = body(module, test).split_whitespace().collect();
        assert!(
            // `Corpus::load("FILE")`, or a module's launcher built on it.
            b.contains(&format!("\"{file}\"")),
            "{module}::{test} does not load {file} ({shape})"
        );
        // The ways these tests ask over both transports: the kit's `Running::both`,
        // a module's `expect`/`ask` built on it or on udp_exchange + tcp_exchange, a loop
        // over `[false, true]` (tcp), or some questions by `query` and others by
        // `query_tcp`.
        let both = [".both(", "expect(&s", "ask(&s", "[false,true]"]
            .iter()
            .any(|m| b.contains(m))
            || (b.contains(".query(") && b.contains(".query_tcp("));
        assert!(both, "{module}::{test} does not ask {file} over UDP and TCP");
    }
}
