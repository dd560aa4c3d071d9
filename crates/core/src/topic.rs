//! Topic names, topic filters and shared-subscription filters, built valid or not at all.
//!
//! Owns: the syntax rules of MQTT 5.0 section 4.7 and 4.8.2 (also valid for 3.1.1, which has the
//! same topic rules), the mapping of each violation to a reason code, and the reference matching
//! function [`matches`]. It does not own the broker's limits (maximum length and maximum number of
//! levels): [`TopicName::levels`] and [`TopicFilter::levels`] are O(1) so the broker can check
//! its `max_topic_levels` cheaply.
//!
//! Cost: parsing is one pass over the bytes (O(len)); the level count is computed during that
//! pass and stored. Memory per value: a `ByteString` (32 bytes, sharing the buffer it was parsed
//! from when built with `TryFrom<ByteString>`, so no copy) plus 2 bytes for the level count.
//! Cloning is a reference-count increment.

use std::fmt;

use bytestring::ByteString;
use rampart_codec::ReasonCode;

/// Longest topic name or filter the protocol can carry ([MQTT-4.7.3-3]).
pub const MAX_TOPIC_LEN: usize = 65_535;

/// Prefix of a shared subscription (MQTT 5.0 section 4.8.2).
pub const SHARE_PREFIX: &str = "$share/";

/// Why a string is not a valid topic name, topic filter or shared subscription.
///
/// Each variant names the normative statement it breaks; [`TopicError::reason_code`] gives the
/// code to send and [`TopicError::rule`] the id to log.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum TopicError {
    /// [MQTT-4.7.3-1] topic names must be at least one character long.
    #[error("[MQTT-4.7.3-1] topic name is empty")]
    NameEmpty,
    /// [MQTT-4.7.3-1] topic filters must be at least one character long.
    #[error("[MQTT-4.7.3-1] topic filter is empty")]
    FilterEmpty,
    /// [MQTT-4.7.3-3] longer than 65,535 bytes.
    #[error("[MQTT-4.7.3-3] topic name is longer than 65535 bytes")]
    NameTooLong,
    /// [MQTT-4.7.3-3] longer than 65,535 bytes.
    #[error("[MQTT-4.7.3-3] topic filter is longer than 65535 bytes")]
    FilterTooLong,
    /// [MQTT-4.7.3-2] U+0000 in a topic name.
    #[error("[MQTT-4.7.3-2] topic name contains U+0000")]
    NameNullChar,
    /// [MQTT-4.7.3-2] U+0000 in a topic filter.
    #[error("[MQTT-4.7.3-2] topic filter contains U+0000")]
    FilterNullChar,
    /// [MQTT-4.7.0-1] `+` or `#` in a topic name.
    #[error("[MQTT-4.7.0-1] topic name contains a wildcard")]
    NameWildcard,
    /// [MQTT-4.7.1-1] `#` not alone in its level or not in the last level.
    #[error("[MQTT-4.7.1-1] '#' must be alone in the last level")]
    MultiLevelWildcard,
    /// [MQTT-4.7.1-2] `+` not alone in its level.
    #[error("[MQTT-4.7.1-2] '+' must occupy a whole level")]
    SingleLevelWildcard,
    /// [MQTT-4.8.2-1] `$share/` followed by an empty share name.
    #[error("[MQTT-4.8.2-1] shared subscription has an empty share name")]
    ShareNameEmpty,
    /// [MQTT-4.8.2-2] share name contains `+` or `#`, or is not followed by `/`.
    #[error("[MQTT-4.8.2-2] share name contains '+' or '#' or is not followed by '/'")]
    ShareNameInvalid,
    /// [MQTT-4.8.2-2] `$share/{name}/` not followed by a topic filter.
    #[error("[MQTT-4.8.2-2] shared subscription has no topic filter")]
    SharedFilterEmpty,
}

impl TopicError {
    /// The normative statement this error breaks, for logs.
    pub fn rule(self) -> &'static str {
        match self {
            TopicError::NameEmpty | TopicError::FilterEmpty => "MQTT-4.7.3-1",
            TopicError::NameTooLong | TopicError::FilterTooLong => "MQTT-4.7.3-3",
            TopicError::NameNullChar | TopicError::FilterNullChar => "MQTT-4.7.3-2",
            TopicError::NameWildcard => "MQTT-4.7.0-1",
            TopicError::MultiLevelWildcard => "MQTT-4.7.1-1",
            TopicError::SingleLevelWildcard => "MQTT-4.7.1-2",
            TopicError::ShareNameEmpty => "MQTT-4.8.2-1",
            TopicError::ShareNameInvalid | TopicError::SharedFilterEmpty => "MQTT-4.8.2-2",
        }
    }

    /// The reason code to answer with: 0x90 for a PUBLISH topic name, 0x8F for a filter.
    pub fn reason_code(self) -> ReasonCode {
        match self {
            TopicError::NameEmpty
            | TopicError::NameTooLong
            | TopicError::NameNullChar
            | TopicError::NameWildcard => ReasonCode::TopicNameInvalid,
            TopicError::FilterEmpty
            | TopicError::FilterTooLong
            | TopicError::FilterNullChar
            | TopicError::MultiLevelWildcard
            | TopicError::SingleLevelWildcard
            | TopicError::ShareNameEmpty
            | TopicError::ShareNameInvalid
            | TopicError::SharedFilterEmpty => ReasonCode::TopicFilterInvalid,
        }
    }
}

impl From<TopicError> for ReasonCode {
    fn from(e: TopicError) -> ReasonCode {
        e.reason_code()
    }
}

/// Number of levels of an already valid topic or filter: separators plus one.
fn count_levels(s: &str) -> u16 {
    // A valid string has at most 65,535 bytes, hence at most 65,535 separators; saturate
    // rather than wrap for the single impossible-in-practice case of 65,535 slashes.
    let n = s.bytes().filter(|&b| b == b'/').count().saturating_add(1);
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// The string conversions and views shared by [`TopicName`] and [`TopicFilter`]: both wrap a
/// validated `ByteString` in a field `s` and have `check(&str)` and `new(ByteString)`.
macro_rules! str_newtype_impls {
    ($name:ident) => {
        impl std::ops::Deref for $name {
            type Target = str;
            fn deref(&self) -> &str {
                &self.s
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.s
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Debug::fmt(&*self.s, f)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.s)
            }
        }

        impl TryFrom<ByteString> for $name {
            type Error = TopicError;
            fn try_from(s: ByteString) -> Result<Self, TopicError> {
                $name::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = TopicError;
            fn try_from(s: &str) -> Result<Self, TopicError> {
                // Validate before copying: rejected input costs no allocation.
                $name::check(s)?;
                $name::new(ByteString::from(s))
            }
        }

        impl TryFrom<String> for $name {
            type Error = TopicError;
            fn try_from(s: String) -> Result<Self, TopicError> {
                $name::check(&s)?;
                $name::new(ByteString::from(s))
            }
        }

        impl std::str::FromStr for $name {
            type Err = TopicError;
            fn from_str(s: &str) -> Result<Self, TopicError> {
                $name::try_from(s)
            }
        }
    };
}

/// A valid PUBLISH topic name: non-empty, at most 65,535 bytes, no `+`, `#` or U+0000.
///
/// Topics starting with `$` are valid names; whether a client may publish to them is the
/// broker's policy.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicName {
    s: ByteString,
    levels: u16,
}

impl TopicName {
    /// Validate `s` without copying it.
    pub fn new(s: ByteString) -> Result<TopicName, TopicError> {
        Self::check(&s)?;
        let levels = count_levels(&s);
        Ok(TopicName { s, levels })
    }

    /// Check that `s` would be a valid topic name, without building one.
    pub fn check(s: &str) -> Result<(), TopicError> {
        if s.is_empty() {
            return Err(TopicError::NameEmpty);
        }
        if s.len() > MAX_TOPIC_LEN {
            return Err(TopicError::NameTooLong);
        }
        for b in s.bytes() {
            match b {
                b'+' | b'#' => return Err(TopicError::NameWildcard),
                0 => return Err(TopicError::NameNullChar),
                _ => {}
            }
        }
        Ok(())
    }

    pub fn as_str(&self) -> &str {
        &self.s
    }

    pub fn as_byte_string(&self) -> &ByteString {
        &self.s
    }

    pub fn into_inner(self) -> ByteString {
        self.s
    }

    /// Number of levels (`a/b` has 2, `a/` has 2, `/` has 2). O(1).
    pub fn levels(&self) -> usize {
        usize::from(self.levels)
    }

    /// Whether the topic starts with `$` (such topics are not matched by a filter starting with
    /// a wildcard, [MQTT-4.7.2-1]).
    pub fn is_dollar(&self) -> bool {
        self.s.starts_with('$')
    }
}

str_newtype_impls!(TopicName);

/// A valid topic filter: non-empty, at most 65,535 bytes, no U+0000, `+` alone in its level,
/// `#` alone in the last level.
///
/// A filter beginning with `$share/` is still a syntactically valid filter (MQTT 3.1.1 has no
/// shared subscriptions); use [`parse_subscription`] to recognise shared subscriptions.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TopicFilter {
    s: ByteString,
    levels: u16,
    wildcard: bool,
}

impl TopicFilter {
    /// Validate `s` without copying it.
    pub fn new(s: ByteString) -> Result<TopicFilter, TopicError> {
        let wildcard = Self::check(&s)?;
        let levels = count_levels(&s);
        Ok(TopicFilter {
            s,
            levels,
            wildcard,
        })
    }

    /// Check that `s` would be a valid filter; `Ok(true)` if it contains a wildcard.
    pub fn check(s: &str) -> Result<bool, TopicError> {
        if s.is_empty() {
            return Err(TopicError::FilterEmpty);
        }
        if s.len() > MAX_TOPIC_LEN {
            return Err(TopicError::FilterTooLong);
        }
        let bytes = s.as_bytes();
        let mut wildcard = false;
        for (i, &b) in bytes.iter().enumerate() {
            let at_level_start = i == 0 || bytes[i - 1] == b'/';
            let at_level_end = i + 1 == bytes.len() || bytes[i + 1] == b'/';
            match b {
                0 => return Err(TopicError::FilterNullChar),
                b'+' => {
                    if !(at_level_start && at_level_end) {
                        return Err(TopicError::SingleLevelWildcard);
                    }
                    wildcard = true;
                }
                b'#' => {
                    if !at_level_start || i + 1 != bytes.len() {
                        return Err(TopicError::MultiLevelWildcard);
                    }
                    wildcard = true;
                }
                _ => {}
            }
        }
        Ok(wildcard)
    }

    pub fn as_str(&self) -> &str {
        &self.s
    }

    pub fn as_byte_string(&self) -> &ByteString {
        &self.s
    }

    pub fn into_inner(self) -> ByteString {
        self.s
    }

    /// Number of levels, counting a final `#` as a level (`a/#` has 2). O(1).
    pub fn levels(&self) -> usize {
        usize::from(self.levels)
    }

    /// Whether the filter contains `+` or `#` (for "Wildcard Subscriptions not supported"). O(1).
    pub fn has_wildcards(&self) -> bool {
        self.wildcard
    }

    /// Whether the first level is `+` or `#`; such filters never match `$` topics.
    pub fn starts_with_wildcard(&self) -> bool {
        matches!(self.s.as_bytes().first(), Some(b'+' | b'#'))
    }

    /// Whether this filter matches `topic` (which must be a valid topic name). See [`matches`].
    pub fn matches(&self, topic: &str) -> bool {
        matches_str(&self.s, topic)
    }
}

str_newtype_impls!(TopicFilter);

/// A parsed SUBSCRIBE / UNSUBSCRIBE entry: an optional share group and the filter proper.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Subscription {
    /// `Some(group)` for `$share/{group}/{filter}`.
    pub share_group: Option<ByteString>,
    /// The filter that topics are matched against (without the `$share/{group}/` prefix).
    pub filter: TopicFilter,
}

impl Subscription {
    pub fn is_shared(&self) -> bool {
        self.share_group.is_some()
    }
}

impl fmt::Display for Subscription {
    /// The filter as the client wrote it: `$share/{group}/{filter}` or `{filter}`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.share_group {
            Some(g) => write!(f, "{SHARE_PREFIX}{g}/{}", self.filter),
            None => f.write_str(&self.filter),
        }
    }
}

/// Parse a subscription filter as MQTT 5.0 does: `$share/{group}/{filter}` is a shared
/// subscription ([MQTT-4.8.2-1], [MQTT-4.8.2-2]), anything else a plain filter.
///
/// Copies `s`; prefer [`parse_subscription_bytes`] on a decoded packet to share its buffer.
pub fn parse_subscription(s: &str) -> Result<Subscription, TopicError> {
    // Validate before copying so that rejected input costs no allocation.
    split_shared(s)?;
    parse_subscription_bytes(ByteString::from(s))
}

/// Like [`parse_subscription`], but the group and filter share `s`'s buffer.
pub fn parse_subscription_bytes(s: ByteString) -> Result<Subscription, TopicError> {
    match split_shared(&s)? {
        None => Ok(Subscription {
            share_group: None,
            filter: TopicFilter::new(s)?,
        }),
        Some((group, filter)) => {
            let group = s.slice_ref(group);
            let filter = TopicFilter::new(s.slice_ref(filter))?;
            Ok(Subscription {
                share_group: Some(group),
                filter,
            })
        }
    }
}

/// Split `$share/{group}/{filter}` and validate both parts; `None` for a non-shared filter.
fn split_shared(s: &str) -> Result<Option<(&str, &str)>, TopicError> {
    let Some(rest) = s.strip_prefix(SHARE_PREFIX) else {
        TopicFilter::check(s)?;
        return Ok(None);
    };
    if s.len() > MAX_TOPIC_LEN {
        return Err(TopicError::FilterTooLong);
    }
    let (group, filter) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        // "$share/group" with no "/": the share name is not followed by "/".
        None if rest.is_empty() => return Err(TopicError::ShareNameEmpty),
        None => {
            if rest.contains(['+', '#']) {
                return Err(TopicError::ShareNameInvalid);
            }
            return Err(TopicError::SharedFilterEmpty);
        }
    };
    if group.is_empty() {
        return Err(TopicError::ShareNameEmpty);
    }
    if group.contains(['+', '#']) {
        return Err(TopicError::ShareNameInvalid);
    }
    if group.contains('\0') {
        return Err(TopicError::FilterNullChar);
    }
    if filter.is_empty() {
        return Err(TopicError::SharedFilterEmpty);
    }
    TopicFilter::check(filter)?;
    Ok(Some((group, filter)))
}

/// Whether `filter` matches `topic` (MQTT 5.0 section 4.7).
///
/// `#` matches its parent level too (`sport/#` matches `sport`); a topic starting with `$` is
/// not matched by a filter whose first level is `+` or `#` [MQTT-4.7.2-1]. O(len) and no
/// allocation. This is the reference the indexes are tested against.
pub fn matches(filter: &TopicFilter, topic: &str) -> bool {
    matches_str(filter, topic)
}

/// [`matches`] on raw strings that the caller knows to be a valid filter and topic name.
pub fn matches_str(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && matches!(filter.as_bytes().first(), Some(b'+' | b'#')) {
        return false;
    }
    let mut f = filter.split('/');
    let mut t = topic.split('/');
    loop {
        match (f.next(), t.next()) {
            (Some("#"), _) => return true,
            (Some("+"), Some(_)) => {}
            (Some(fl), Some(tl)) => {
                if fl != tl {
                    return false;
                }
            }
            (None, None) => return true,
            (Some(_), None) | (None, Some(_)) => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Result<TopicName, TopicError> {
        TopicName::try_from(s)
    }
    fn filter(s: &str) -> Result<TopicFilter, TopicError> {
        TopicFilter::try_from(s)
    }
    fn m(f: &str, t: &str) -> bool {
        matches(&filter(f).unwrap(), t)
    }

    #[test]
    fn topic_names() {
        for ok in [
            "a",
            "/",
            "a/b",
            "a//b",
            "$SYS/x",
            " ",
            "a/",
            "/a",
            "日本/語",
        ] {
            assert!(name(ok).is_ok(), "{ok}");
        }
        assert_eq!(name(""), Err(TopicError::NameEmpty));
        assert_eq!(name("a/+"), Err(TopicError::NameWildcard));
        assert_eq!(name("a#"), Err(TopicError::NameWildcard));
        assert_eq!(name("a\0b"), Err(TopicError::NameNullChar));
        assert!(name(&"a".repeat(65_535)).is_ok());
        assert_eq!(name(&"a".repeat(65_536)), Err(TopicError::NameTooLong));
        assert_eq!(
            TopicError::NameWildcard.reason_code(),
            ReasonCode::TopicNameInvalid
        );
        assert_eq!(TopicError::NameWildcard.rule(), "MQTT-4.7.0-1");
    }

    #[test]
    fn topic_filters() {
        for ok in [
            "#",
            "+",
            "a/#",
            "+/+",
            "/+",
            "+/",
            "a/+/b",
            "a//b",
            "$SYS/#",
            "+/#",
            "a/b",
            "/",
            "$share/g/a",
        ] {
            assert!(filter(ok).is_ok(), "{ok}");
        }
        assert_eq!(filter(""), Err(TopicError::FilterEmpty));
        for bad in ["a/#/b", "a#", "#a", "##", "a/b#", "#/"] {
            assert_eq!(filter(bad), Err(TopicError::MultiLevelWildcard), "{bad}");
        }
        for bad in ["a+", "+a", "a/+b", "++", "a/b+/c"] {
            assert_eq!(filter(bad), Err(TopicError::SingleLevelWildcard), "{bad}");
        }
        assert_eq!(filter("a\0"), Err(TopicError::FilterNullChar));
        assert_eq!(filter(&"a".repeat(65_536)), Err(TopicError::FilterTooLong));
        assert_eq!(
            TopicError::MultiLevelWildcard.reason_code(),
            ReasonCode::TopicFilterInvalid
        );
        assert_eq!(TopicError::SingleLevelWildcard.rule(), "MQTT-4.7.1-2");
        assert!(filter("a/+").unwrap().has_wildcards());
        assert!(!filter("a/b").unwrap().has_wildcards());
        assert!(filter("+/b").unwrap().starts_with_wildcard());
        assert!(!filter("a/#").unwrap().starts_with_wildcard());
    }

    #[test]
    fn levels() {
        assert_eq!(name("a").unwrap().levels(), 1);
        assert_eq!(name("a/b/c").unwrap().levels(), 3);
        assert_eq!(name("/").unwrap().levels(), 2);
        assert_eq!(name("a//").unwrap().levels(), 3);
        assert_eq!(filter("a/#").unwrap().levels(), 2);
        assert_eq!(filter("#").unwrap().levels(), 1);
    }

    #[test]
    fn shared_subscriptions() {
        let s = parse_subscription("$share/grp/a/+/c").unwrap();
        assert_eq!(s.share_group.as_deref(), Some("grp"));
        assert_eq!(s.filter.as_str(), "a/+/c");
        let s = parse_subscription("$share/g/#").unwrap();
        assert_eq!(s.filter.as_str(), "#");
        let s = parse_subscription("a/b").unwrap();
        assert!(!s.is_shared());
        // "$share" without the slash is an ordinary filter.
        assert!(!parse_subscription("$share").unwrap().is_shared());
        assert!(!parse_subscription("$sharex/g/a").unwrap().is_shared());

        assert_eq!(
            parse_subscription("$share//a"),
            Err(TopicError::ShareNameEmpty)
        );
        assert_eq!(
            parse_subscription("$share/"),
            Err(TopicError::ShareNameEmpty)
        );
        assert_eq!(
            parse_subscription("$share/g+/a"),
            Err(TopicError::ShareNameInvalid)
        );
        assert_eq!(
            parse_subscription("$share/#"),
            Err(TopicError::ShareNameInvalid)
        );
        assert_eq!(
            parse_subscription("$share/g"),
            Err(TopicError::SharedFilterEmpty)
        );
        assert_eq!(
            parse_subscription("$share/g/"),
            Err(TopicError::SharedFilterEmpty)
        );
        assert_eq!(
            parse_subscription("$share/g/a/#/b"),
            Err(TopicError::MultiLevelWildcard)
        );
        assert_eq!(
            parse_subscription("a/b#"),
            Err(TopicError::MultiLevelWildcard)
        );
        assert_eq!(parse_subscription(""), Err(TopicError::FilterEmpty));
        assert_eq!(
            TopicError::ShareNameEmpty.reason_code(),
            ReasonCode::TopicFilterInvalid
        );
        assert_eq!(TopicError::ShareNameEmpty.rule(), "MQTT-4.8.2-1");

        // The zero-copy variant shares the input buffer.
        let input = ByteString::from("$share/g/x/y");
        let s = parse_subscription_bytes(input.clone()).unwrap();
        assert_eq!(
            s.filter.as_str().as_ptr(),
            input.as_bytes()[9..].as_ptr(),
            "filter must point into the input buffer"
        );
    }

    #[test]
    fn matching_rules() {
        assert!(m("sport/tennis/player1/#", "sport/tennis/player1"));
        assert!(m("sport/tennis/player1/#", "sport/tennis/player1/ranking"));
        assert!(m(
            "sport/tennis/player1/#",
            "sport/tennis/player1/score/wimbledon"
        ));
        assert!(m("sport/#", "sport"));
        assert!(m("#", "a/b/c"));
        assert!(m("#", "/"));
        assert!(m("sport/tennis/+", "sport/tennis/player1"));
        assert!(!m("sport/tennis/+", "sport/tennis/player1/ranking"));
        assert!(!m("sport/+", "sport"));
        assert!(m("sport/+", "sport/"));
        assert!(m("+/+", "/finance"));
        assert!(m("/+", "/finance"));
        assert!(!m("+", "/finance"));
        assert!(m("+", "a"));
        assert!(m("a//b", "a//b"));
        assert!(m("a/+/b", "a//b"));
        assert!(!m("a/b", "a/b/"));
        assert!(!m("a/b/", "a/b"));
        assert!(!m("a", "b"));
        // [MQTT-4.7.2-1]
        assert!(!m("#", "$SYS/x"));
        assert!(!m("+/monitor/Clients", "$SYS/monitor/Clients"));
        assert!(m("$SYS/#", "$SYS/monitor/Clients"));
        assert!(m("$SYS/monitor/+", "$SYS/monitor/Clients"));
        assert!(!m("+", "$"));
        assert!(m("a/#", "a/$b"));
        assert!(m("+/$b", "a/$b"));
    }

    proptest::proptest! {
        #[test]
        fn names_roundtrip(s in "[a-c/+#$\\x00]{0,12}") {
            if let Ok(n) = TopicName::try_from(s.as_str()) {
                proptest::prop_assert_eq!(n.as_str(), s.as_str());
                proptest::prop_assert!(!s.contains(['+', '#', '\0']) && !s.is_empty());
                proptest::prop_assert_eq!(n.levels(), s.split('/').count());
            } else {
                proptest::prop_assert!(s.contains(['+', '#', '\0']) || s.is_empty());
            }
        }

        #[test]
        fn filters_valid_iff_levels_valid(s in "[ab/+#\\x00]{0,10}") {
            let levels: Vec<&str> = s.split('/').collect();
            let n = levels.len();
            let valid = !s.is_empty()
                && !s.contains('\0')
                && levels.iter().enumerate().all(|(i, l)| {
                    (!l.contains('+') || *l == "+") && (!l.contains('#') || (*l == "#" && i + 1 == n))
                });
            proptest::prop_assert_eq!(TopicFilter::try_from(s.as_str()).is_ok(), valid);
        }

        #[test]
        fn shared_parse_roundtrip(g in "[a-c+#$]{0,4}", fl in "[ab/+#]{0,6}") {
            let input = format!("$share/{g}/{fl}");
            let group_ok = !g.is_empty() && !g.contains(['+', '#']);
            let filter_ok = TopicFilter::try_from(fl.as_str()).is_ok();
            match parse_subscription(&input) {
                Ok(sub) => {
                    proptest::prop_assert!(group_ok && filter_ok);
                    proptest::prop_assert_eq!(sub.share_group.as_deref(), Some(g.as_str()));
                    proptest::prop_assert_eq!(sub.filter.as_str(), fl.as_str());
                    proptest::prop_assert_eq!(sub.to_string(), input);
                }
                Err(e) => {
                    proptest::prop_assert!(!(group_ok && filter_ok));
                    proptest::prop_assert_eq!(e.reason_code(), ReasonCode::TopicFilterInvalid);
                }
            }
        }

        #[test]
        fn literal_filter_matches_only_itself(a in "[ab/$]{1,8}", b in "[ab/$]{1,8}") {
            let f = TopicFilter::try_from(a.as_str()).unwrap();
            proptest::prop_assert_eq!(f.matches(&b), a == b);
        }
    }
}
