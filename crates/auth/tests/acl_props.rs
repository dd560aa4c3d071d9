//! Properties of ACL matching, checked against rampart-core's reference topic matcher.

use proptest::prelude::*;
use rampart_auth::acl::{covers, parse_file};
use rampart_core::topic::matches_str;

fn level() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("a".to_string()),
        Just("b".to_string()),
        Just("$SYS".to_string()),
        Just(String::new()),
    ]
}

fn topic() -> impl Strategy<Value = String> {
    prop::collection::vec(level(), 1..5).prop_map(|l| l.join("/"))
}

fn filter() -> impl Strategy<Value = String> {
    (
        prop::collection::vec(prop_oneof![level(), Just("+".to_string())], 0..4),
        any::<bool>(),
    )
        .prop_map(|(mut l, hash)| {
            if hash || l.is_empty() {
                l.push("#".to_string());
            }
            l.join("/")
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    /// For topic names, coverage is exactly MQTT matching (including the `$` rule).
    #[test]
    fn covers_a_name_iff_it_matches(f in filter(), t in topic()) {
        prop_assert_eq!(covers(&f, &t), matches_str(&f, &t), "filter {} topic {}", f, t);
    }

    /// Soundness for subscriptions: if rule R covers filter S, every topic S matches, R matches.
    #[test]
    fn coverage_is_sound(r in filter(), s in filter(), ts in prop::collection::vec(topic(), 16)) {
        if covers(&r, &s) {
            for t in &ts {
                prop_assert!(!matches_str(&s, t) || matches_str(&r, t), "rule {} sub {} topic {}", r, s, t);
            }
        }
    }

    /// Any text parses or reports errors; it never panics, and errors name their line.
    #[test]
    fn parse_never_panics(text in "[a-z:/#+${}= \n*0-9.]{0,200}") {
        if let Err(errs) = parse_file(&text, "f") {
            for e in errs {
                prop_assert!(e.starts_with("f:"), "{}", e);
            }
        }
    }
}
