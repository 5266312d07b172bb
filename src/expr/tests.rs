//! The subset's behaviour, each case from expr-lang's language definition or CoreDNS's
//! tests of `view`/`template` (cited per case).

use super::*;
use crate::dns::{Request, Transport};

fn with_request<R>(client: &str, f: impl FnOnce(&Request<'_>) -> R) -> R {
    // ID 0x1234, RD, one question: a.example. A IN.
    let raw = b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x01a\x07example\x00\x00\x01\x00\x01";
    let client = client.parse().unwrap();
    let local = "127.0.0.1:53".parse().unwrap();
    let req = Request::parse(raw, Transport::Udp, client, local).ok().unwrap();
    f(&req)
}

/// A value read out of its heap, for comparing.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Array(Vec<Value>),
}

fn owned(v: View<'_>) -> Value {
    match v {
        View::Nil => Value::Nil,
        View::Bool(b) => Value::Bool(b),
        View::Int(i) => Value::Int(i),
        View::Float(x) => Value::Float(x),
        View::Str(s) => Value::Str(s.to_string()),
        View::Array(h, items) => Value::Array(items.iter().map(|i| owned(h.view(*i))).collect()),
    }
}

fn stored(v: &Value, h: &mut Heap) -> super::Value {
    match v {
        Value::Nil => super::Value::Nil,
        Value::Bool(b) => super::Value::Bool(*b),
        Value::Int(i) => super::Value::Int(*i),
        Value::Float(x) => super::Value::Float(*x),
        Value::Str(s) => h.string(s).unwrap(),
        Value::Array(a) => {
            let items: Vec<_> = a.iter().map(|i| stored(i, h)).collect();
            h.array(&items).unwrap()
        }
    }
}

fn run_with(text: &str, scope: &Scope, vars: &[Value]) -> Result<Value, String> {
    let prog = Program::compile(text, scope).map_err(|e| format!("compile: {e}"))?;
    with_request("10.240.0.1:5353", |req| {
        let group = |k: GroupKey<'_>| match k {
            GroupKey::Name("a") | GroupKey::Index(1) => Some("12"),
            GroupKey::Index(0) => Some("12-34.example."),
            _ => None,
        };
        let md = |k: &str, out: &mut String| {
            if k == "test/region" {
                out.push_str("eu");
            }
        };
        let mut heap = Heap::default();
        let vars: Vec<_> = vars.iter().map(|v| stored(v, &mut heap)).collect();
        let mut name = String::new();
        write_name(req.qname.wire(), &mut name);
        let facts = Facts {
            req,
            name: &name,
            vars: &vars,
            group: &group,
            metadata: &md,
        };
        let v = prog.eval(&facts, &mut heap).map_err(|e| format!("eval: {e}"))?;
        Ok(owned(heap.view(v)))
    })
}

fn run(text: &str) -> Result<Value, String> {
    run_with(
        text,
        &Scope {
            vars: vec![],
            group: true,
        },
        &[],
    )
}

#[test]
fn query_functions_as_coredns_default_env() {
    // plugin/pkg/expression/expression.go DefaultEnv; template var_test.go "QueryFunctions".
    let s = |v: &str| Ok(Value::Str(v.into()));
    assert_eq!(run("name()"), s("a.example."));
    assert_eq!(run("type()"), s("A"));
    assert_eq!(run("class()"), s("IN"));
    assert_eq!(run("client_ip()"), s("10.240.0.1"));
    assert_eq!(run("port()"), s("5353"));
    assert_eq!(run("proto()"), s("udp"));
    assert_eq!(run("server_ip()"), s("127.0.0.1"));
    assert_eq!(run("server_port()"), s("53"));
    assert_eq!(run("id()"), Ok(Value::Int(0x1234)));
    assert_eq!(run("opcode()"), Ok(Value::Int(0)));
    assert_eq!(run("do()"), Ok(Value::Bool(false)));
    assert_eq!(run("bufsize()"), Ok(Value::Int(512)));
    assert_eq!(run("size()"), Ok(Value::Int(27)));
}

#[test]
fn operators_and_builtins() {
    let t = Ok(Value::Bool(true));
    let f = Ok(Value::Bool(false));
    // view README: `(type() == 'A' && name() == 'example.com.') || client_ip() == '1.2.3.4'`.
    assert_eq!(
        run("(type() == 'A' && name() == 'example.com.') || client_ip() == '1.2.3.4'"),
        f
    );
    // view README: `type() in ['A', 'AAAA']`.
    assert_eq!(run("type() in ['A', 'AAAA']"), t);
    assert_eq!(run("type() not in ['A', 'AAAA']"), f);
    // view README: `name() matches '^abc\\..*\\.example\\.com\\.$'`.
    assert_eq!(run(r"name() matches '^a\\.example\\.$'"), t);
    // view README: incidr(client_ip(), '10.0.0.0/8'); template expr_test "AllTrue".
    assert_eq!(run("incidr(client_ip(), '10.0.0.0/8')"), t);
    assert_eq!(run("incidr(client_ip(), '192.0.2.0/24')"), f);
    assert_eq!(run("incidr('2001:db8::1', '2001:db8::/32') and not false"), t);
    // template var_test "RuntimeError": incidr('notanip', ...) fails the query.
    assert!(
        run("incidr('notanip', '10.0.0.0/8')")
            .unwrap_err()
            .contains("not an IP")
    );
    // template README: any([...], incidr(ip, #)).
    assert_eq!(run("any(['10.0.0.0/8', '172.16.0.0/12'], incidr(client_ip(), #))"), t);
    assert_eq!(
        run("all([1, 2, 3], {# > 0}) && none([1, 2], # > 5) && one([1, 2], # == 2)"),
        t
    );
    // template var_test "Chained": var b a + 1; var c b * 10.
    assert_eq!(run("1 + 1 * 10"), Ok(Value::Int(11)));
    assert_eq!(run("(1 + 1) * 10 % 7"), Ok(Value::Int(6)));
    assert_eq!(run("7 / 2"), Ok(Value::Float(3.5)));
    assert_eq!(run("'x' + group('a')"), Ok(Value::Str("x12".into())));
    // var_test "GroupByNameAndIndex" and "GroupMissing".
    assert_eq!(run("group(1) == group('a') && group(0) == '12-34.example.'"), t);
    assert_eq!(run("group('nosuchgroup') + group(9)"), Ok(Value::Str(String::new())));
    // expr_test "UsesVars": int(group('n')) > 1.
    assert_eq!(run("int(group('a')) > 1"), t);
    assert_eq!(
        run("upper('ab') + lower('CD') + trim('  x ')"),
        Ok(Value::Str("ABcdx".into()))
    );
    assert_eq!(run("replace('1-2-3', '-', '.')"), Ok(Value::Str("1.2.3".into())));
    // One byte for another (its own path) at the ends, doubled, next to non-ASCII.
    assert_eq!(run("replace('-a--b-', '-', '.')"), Ok(Value::Str(".a..b.".into())));
    assert_eq!(run("replace('ä-ö', '-', 'x')"), Ok(Value::Str("äxö".into())));
    assert_eq!(run("replace('abc', 'x', 'y')"), Ok(Value::Str("abc".into())));
    assert_eq!(run("replace('', '-', '.')"), Ok(Value::Str("".into())));
    assert_eq!(run("len(split('a.b.c', '.'))"), Ok(Value::Int(3)));
    assert_eq!(
        run("name() endsWith '.example.' && name() startsWith 'a' && name() contains 'exa'"),
        t
    );
    assert_eq!(run("hasPrefix(name(), 'a.') ? 1 : 2"), Ok(Value::Int(1)));
    assert_eq!(run("metadata('test/region')"), Ok(Value::Str("eu".into())));
    assert_eq!(run("-2 < 1 && !(1 >= 2) && 'a' < 'b' && 1 == 1.0 && nil == nil"), t);
}

#[test]
fn variables_are_the_ones_declared_before() {
    let scope = Scope {
        vars: vec!["a".into(), "b".into()],
        group: false,
    };
    assert_eq!(
        run_with("a + b", &scope, &[Value::Int(1), Value::Int(2)]),
        Ok(Value::Int(3))
    );
    assert!(run_with("c", &scope, &[]).unwrap_err().contains("unknown name 'c'"));
    assert!(scope.is_reserved("len") && scope.is_reserved("true") && !scope.is_reserved("ip"));
}

#[test]
fn outside_the_subset_is_a_clear_setup_error() {
    let cases = [
        ("now()", "the function 'now' is not in the expression subset"),
        ("a.b", "unknown name 'a'"),
        ("name().x", "member access ('.') is not in the expression subset"),
        ("[1][0]", "indexing ('[...]') is not in the expression subset"),
        ("1 ?? 2", "the operator '??' is not in the expression subset"),
        (
            "name() matches type()",
            "'matches' with a pattern that is not a string literal",
        ),
        ("incidr(1)", "incidr() takes 2 argument(s), got 1"),
        ("# > 1", "'#' outside a predicate"),
        ("name", "'name' is a function: call it as name(...)"),
        ("'abc", "unterminated string"),
        ("1 +", "unexpected end of the expression"),
        ("1 2", "unexpected '2' after the expression"),
        ("{a: 1}", "a map literal"),
    ];
    for (text, want) in cases {
        let got = run(text).unwrap_err();
        assert!(got.contains(want), "{text}: {got}");
    }
    let deep = format!("{}1{}", "(".repeat(100), ")".repeat(100));
    assert!(run(&deep).unwrap_err().contains("deeper than 64"));
    let long = "1 + ".repeat(2000) + "1";
    assert!(run(&long).unwrap_err().contains("too long"));
}

/// Type errors a query cannot change are setup errors, worded as expr-lang's checker
/// words them; what depends on a query's values (variables, `#`, `nil`) is checked when
/// it runs.
#[test]
fn type_errors_knowable_at_setup_are_setup_errors() {
    let cases = [
        (
            "size() > 'big'",
            "invalid operation: > (mismatched types int and string)",
        ),
        ("name() == 1", "invalid operation: == (mismatched types string and int)"),
        ("1 + 'a'", "invalid operation: + (mismatched types int and string)"),
        ("!name()", "invalid operation: ! (string)"),
        ("do() || 1", "invalid operation: || (mismatched types bool and int)"),
        ("name() matches 'x' && 3", "invalid operation: &&"),
        (
            "incidr(client_ip(), 8)",
            "cannot use int as argument (type string) to call incidr, argument 2",
        ),
        (
            "upper(1)",
            "cannot use int as argument (type string) to call upper, argument 1",
        ),
        (
            "'a' in 'abc'",
            "invalid operation: in (mismatched types string and string)",
        ),
        ("any(1, # > 0)", "takes only array"),
        ("all([1], 'x')", "predicate should return boolean"),
        ("len(1)", "invalid argument for len (type int)"),
        ("1.5 % 2", "invalid operation: % (mismatched types float64 and int)"),
        ("type() ? 1 : 2", "non-bool expression (type string) used as condition"),
    ];
    for (text, want) in cases {
        let got = run(text).unwrap_err();
        assert!(got.starts_with("compile: ") && got.contains(want), "{text}: {got}");
    }
    // Still fine: numbers of either kind, nil against anything, and whatever a variable
    // holds (known only per query).
    let scope = Scope {
        vars: vec!["v".into()],
        group: true,
    };
    for text in [
        "1 == 1.0",
        "nil == 'a'",
        "v > 1",
        "v + 'x' == 'ax'",
        "int(group('a')) + 1 > 1",
    ] {
        Program::compile(text, &scope).unwrap_or_else(|e| panic!("{text}: {e}"));
    }
    // A type error that only a query shows: the evaluation fails (the template answers
    // SERVFAIL, as CoreDNS's var_test "RuntimeError").
    assert!(
        run_with("v > 1", &scope, &[Value::Str("x".into())])
            .unwrap_err()
            .contains("invalid operation")
    );
}

/// A chain of binary operators nests the tree one level per operator, and evaluation
/// recurses that deep: 2,000 `+` in a 4 KiB expression once overflowed a worker's
/// stack; now they count against MAX_DEPTH like parentheses.
#[test]
fn a_long_operator_chain_is_as_deep_as_its_operators() {
    let scope = Scope::default();
    let long = vec!["1"; 2000].join("+");
    let Err(err) = Program::compile(&long, &scope) else {
        panic!("a 2,000-operator chain compiled")
    };
    assert!(err.to_string().contains("deeper than"), "{err}");
    let short = vec!["1"; 20].join("+");
    assert!(Program::compile(&short, &scope).is_ok());
}

/// Quantifiers nested over arrays multiply (100 x 100 x 100 predicate runs here): a
/// query's evaluations stop at MAX_STEPS with an error (SERVFAIL from a template), while
/// two levels (10,000 runs) still answer.
#[test]
fn nested_quantifiers_stop_at_the_step_bound() {
    let arr = format!("[{}]", vec!["1"; 100].join(","));
    let two = format!("any({arr}, any({arr}, # == 1))");
    assert!(matches!(run(&two), Ok(Value::Bool(true))), "{:?}", run(&two));
    let three = format!("any({arr}, any({arr}, any({arr}, # == 2)))");
    let e = run(&three).expect_err("over the bound");
    assert!(e.contains("steps"), "{e}");
}

/// The one-copy path for plain names writes what label-by-label escaping writes.
#[test]
fn names_written_in_one_copy_as_label_by_label() {
    // The reference: label-by-label escaping as the rest of the server prints names.
    let reference = crate::dns::wire::name_to_string;
    let long = [&[63u8][..], &[b'x'; 63], b"\x01y\x00"].concat();
    let cases: Vec<Vec<u8>> = vec![
        b"\x00".to_vec(),
        b"".to_vec(),
        b"\x01a\x00".to_vec(),
        b"\x02ip\x0810-1-2-3\x04expr\x04test\x00".to_vec(),
        b"\x03web\x06team-a".to_vec(),
        b"\x03web\x03a;b\x00".to_vec(),
        b"\x03a b\x01c\x00".to_vec(),
        b"\x03ab\x00".to_vec(),
        b"\x05ab\x00".to_vec(),
        long,
    ];
    let mut out = String::from("left over");
    for wire in &cases {
        write_name(wire, &mut out);
        assert_eq!(out, reference(wire), "{wire:?}");
    }
}
