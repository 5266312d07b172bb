//! The metadata contract (`Query::metadata`, `Handler::metadata`) and the plugin's
//! setup. Setup cases follow CoreDNS's plugin/metadata/setup_test.go (TestSetup).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::chain::{Chain, Outcome, Query};
use crate::config::parse_str;
use crate::dns::{NameKey, QueryBuilder, rtype};
use crate::process::ProcessState;

fn setup_from(corefile: &str) -> Result<Plugin, ConfigError> {
    let parsed = parse_str(corefile, "Corefile", std::path::Path::new("."))?;
    let dirs: Vec<&Directive> = parsed.blocks[0].directives.iter().collect();
    let zones = [Zone::new("example.org.").unwrap()];
    let ctx = SetupCtx {
        zones: &zones,
        config_dir: ".".into(),
        workers: 1,
        binds: None,
        process: &ProcessState::new(),
    };
    setup(&dirs, &ctx)
}

fn zones_of(corefile: &str) -> Vec<String> {
    let p = setup_from(corefile).unwrap_or_else(|e| panic!("{corefile}: {e}"));
    let h = p.handler.unwrap();
    h.metadata_zones().unwrap().iter().map(|z| z.to_string()).collect()
}

#[test]
fn setup_zones_default_to_the_block_and_errors_are_coredns_s() {
    // setup_test.go: "metadata" -> the block's zones; "metadata example.com. net." ->
    // both; a block or a second `metadata` is an error.
    assert_eq!(zones_of("example.org {\n metadata\n}\n"), ["example.org."]);
    assert_eq!(zones_of("example.org {\n metadata example.com.\n}\n"), ["example.com."]);
    assert_eq!(
        zones_of("example.org {\n metadata example.com. NET\n}\n"),
        ["example.com.", "net."]
    );
    assert_eq!(
        zones_of("example.org {\n metadata 10.0.0.0/8\n}\n"),
        ["10.in-addr.arpa."]
    );
    for (corefile, want) in [
        (
            "example.org {\n metadata example.com. {\n  some_param\n }\n}\n",
            "Corefile:2 - metadata: Wrong argument count or unexpected line ending after 'example.com.'",
        ),
        (
            "example.org {\n metadata\n metadata\n}\n",
            "Corefile:3 - metadata: this plugin can only be used once per Server Block",
        ),
        (
            "example.org {\n metadata a..b\n}\n",
            "Corefile:2 - metadata: invalid zone 'a..b'",
        ),
    ] {
        let err = setup_from(corefile).err().map(|e| e.to_string());
        assert_eq!(err.as_deref(), Some(want), "{corefile}");
    }
}

/// A provider that knows `test/<label>` = `value`, and counts how often it is asked.
struct Provider {
    label: &'static str,
    value: &'static str,
    asked: AtomicUsize,
}

impl Provider {
    fn new(label: &'static str, value: &'static str) -> Arc<Provider> {
        Arc::new(Provider {
            label,
            value,
            asked: AtomicUsize::new(0),
        })
    }
}

impl Handler for Provider {
    fn name(&self) -> &'static str {
        "provider"
    }
    fn serve(&self, _: &mut Query<'_, '_>) -> Step {
        Step::Next
    }
    fn provides_metadata(&self) -> bool {
        true
    }
    fn metadata(&self, _: &Query<'_, '_>, label: &str, out: &mut String) -> bool {
        self.asked.fetch_add(1, Ordering::Relaxed);
        if label != self.label {
            return false;
        }
        out.push_str(self.value);
        true
    }
}

/// Answers, after reading the labels it is given into `seen`.
struct Consumer {
    labels: &'static [&'static str],
    seen: parking_lot::Mutex<Vec<Option<String>>>,
}

impl Handler for Consumer {
    fn name(&self) -> &'static str {
        "consumer"
    }
    fn serve(&self, q: &mut Query<'_, '_>) -> Step {
        let mut out = String::new();
        let mut seen = self.seen.lock();
        for l in self.labels {
            let set = q.metadata(l, &mut out);
            seen.push(set.then(|| out.clone()));
        }
        q.resp.start(q.req, crate::dns::Rcode::NOERROR);
        Step::Answered
    }
}

/// Runs `chain` for `qname` the way the server does (`meta` from the chain) and
/// returns what the consumer saw.
fn run(chain: &Chain, consumer: &Consumer, qname: &str) -> Vec<Option<String>> {
    let name = NameKey::from_text(qname).unwrap();
    let raw = QueryBuilder::new(name.wire(), rtype::A).to_vec();
    consumer.seen.lock().clear();
    crate::chain::testing::with_query(&raw, "127.0.0.1:1".parse().unwrap(), chain.metadata(), |q| {
        let Outcome::Reply { at } = chain.run(q, 0) else {
            panic!("upstream")
        };
        chain.complete(q, at);
    });
    std::mem::take(&mut *consumer.seen.lock())
}

fn metadata_plugin(zones: &[&str]) -> Arc<dyn Handler> {
    Arc::new(super::Metadata {
        zones: zones.iter().map(|z| Zone::new(z).unwrap()).collect(),
    })
}

#[test]
fn labels_are_read_from_providers_only_in_blocks_with_metadata_and_in_its_zones() {
    let p = Provider::new("test/a", "one");
    let consumer = Arc::new(Consumer {
        labels: &["test/a", "test/b"],
        seen: Default::default(),
    });
    let with = Chain::new(vec![metadata_plugin(&["example.org."]), p.clone(), consumer.clone()]);
    assert!(with.metadata().is_on());
    // Set, and unset (no provider knows `test/b`).
    assert_eq!(run(&with, &consumer, "www.example.org."), [Some("one".into()), None]);
    assert_eq!(p.asked.load(Ordering::Relaxed), 2);
    // Outside the metadata zones (metadata.go Collect: zone match first): nothing,
    // and no provider is asked.
    assert_eq!(run(&with, &consumer, "www.example.net."), [None, None]);
    assert_eq!(p.asked.load(Ordering::Relaxed), 2);

    // No `metadata` in the block: the provider is never asked.
    let without = Chain::new(vec![p.clone(), consumer.clone()]);
    assert!(!without.metadata().is_on());
    assert_eq!(run(&without, &consumer, "www.example.org."), [None, None]);
    assert_eq!(p.asked.load(Ordering::Relaxed), 2);
}

#[test]
fn the_last_provider_to_set_a_label_wins_and_empty_is_set() {
    // CoreDNS's SetValueFunc overwrites: providers are collected in chain order, so
    // the later one's value is what a consumer reads.
    let first = Provider::new("test/a", "first");
    let second = Provider::new("test/a", "");
    let consumer = Arc::new(Consumer {
        labels: &["test/a"],
        seen: Default::default(),
    });
    let chain = Chain::new(vec![metadata_plugin(&["."]), first, second, consumer.clone()]);
    assert_eq!(run(&chain, &consumer, "x."), [Some(String::new())]);
}
