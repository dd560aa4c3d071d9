//! ACL rules: the file syntax, the rules that come with an identity, and matching.
//!
//! # File syntax (one rule per line; `#` starts a comment line)
//! ```text
//! <allow|deny> <who> <action> <topic> [qos=<0,1,2>] [retain=<true|false>]
//! ```
//! - who: `all`, `anonymous`, `user:<name>`, `client:<id>`, `cn:<common name>`,
//!   `group:<name>`, `ip:<address or CIDR>`. A trailing `*` in a name or id matches any
//!   suffix (`client:sensor-*`).
//! - action: `publish`, `subscribe` or `all`.
//! - topic: an MQTT topic filter (`+`, `#`), which may use `${username}`, `${clientid}` and
//!   `${cert_common_name}`; or `eq:<filter>` to match a subscription to exactly that filter
//!   (or a publish to exactly that name), wildcards taken literally.
//! - qos: the QoS levels the rule applies to (`qos=0,1`); retain: applies only to publishes
//!   with (or without) the retain flag.
//!
//! The first matching rule decides. A placeholder whose value is missing (no username, no
//! certificate) or contains `+`, `#` or `/` makes its rule match nothing, so that a client
//! cannot widen a rule by choosing its name.
//!
//! A subscription is allowed by a rule whose filter covers every topic the subscription can
//! match: `sensors/#` allows `sensors/+/temp`, but only a rule for `#` itself allows `#`, and
//! since a leading wildcard never matches `$` topics, `$SYS/#` needs a rule that names `$SYS`.
//!
//! Rules that arrive with an identity (built-in users, JWT claims, HTTP answers, SQL rows)
//! use the same syntax without `who`: `allow publish devices/${clientid}/#`.

use std::fmt;
use std::net::IpAddr;

use crate::Identity;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Permission {
    Allow,
    Deny,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Publish,
    Subscribe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ActionSet {
    Publish,
    Subscribe,
    All,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Name {
    Exact(String),
    Prefix(String),
}

impl Name {
    fn parse(s: &str) -> Result<Name, String> {
        if s.is_empty() {
            return Err("empty name".to_string());
        }
        match s.strip_suffix('*') {
            Some(p) if !p.contains('*') => Ok(Name::Prefix(p.to_string())),
            Some(_) => Err("`*` is only allowed at the end".to_string()),
            None => Ok(Name::Exact(s.to_string())),
        }
    }

    fn matches(&self, v: &str) -> bool {
        match self {
            Name::Exact(e) => e == v,
            Name::Prefix(p) => v.starts_with(p.as_str()),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Who {
    All,
    Anonymous,
    User(Name),
    Client(Name),
    Cn(Name),
    Group(String),
    Ip { net: IpAddr, prefix: u8 },
}

/// One rule, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AclRule {
    pub permission: Permission,
    who: Who,
    actions: ActionSet,
    /// The topic filter with placeholders still in it.
    topic: String,
    exact: bool,
    /// Bit n set: QoS n applies.
    qos_mask: u8,
    retain: Option<bool>,
    /// Where it came from ("acl.conf:12", "jwt claim"), for logs.
    pub origin: String,
}

/// What is being authorized.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub action: Action,
    /// A topic name (publish) or filter (subscribe; `$share/<group>/` already removed).
    pub topic: &'a str,
    pub qos: u8,
    pub retain: bool,
}

impl AclRule {
    /// Parses a file rule (with `who`).
    pub fn parse_file_line(line: &str, origin: String) -> Result<AclRule, String> {
        parse(line, true, origin)
    }

    /// Parses a rule that came with an identity (no `who`: it applies to that client).
    pub fn parse_identity_rule(line: &str, origin: String) -> Result<AclRule, String> {
        parse(line, false, origin)
    }

    /// Builds an identity rule from separate fields (SQL rows, JSON objects).
    pub fn from_parts(
        permission: &str,
        action: &str,
        topic: &str,
        origin: String,
    ) -> Result<AclRule, String> {
        parse(&format!("{permission} {action} {topic}"), false, origin)
    }

    /// The rule's decision if it applies to `req` from `id`, else `None`.
    pub fn check(&self, id: &Identity, req: &Request) -> Option<Permission> {
        let action_ok = matches!(
            (self.actions, req.action),
            (ActionSet::All, _)
                | (ActionSet::Publish, Action::Publish)
                | (ActionSet::Subscribe, Action::Subscribe)
        );
        if !action_ok || self.qos_mask & (1 << req.qos.min(2)) == 0 {
            return None;
        }
        if let Some(r) = self.retain {
            if req.action != Action::Publish || r != req.retain {
                return None;
            }
        }
        if !self.who_matches(id) {
            return None;
        }
        let topic = substitute(&self.topic, id)?;
        let hit = if self.exact {
            topic == req.topic
        } else {
            covers(&topic, req.topic)
        };
        hit.then_some(self.permission)
    }

    fn who_matches(&self, id: &Identity) -> bool {
        match &self.who {
            Who::All => true,
            Who::Anonymous => id.username.is_none() && id.cert.is_none(),
            Who::User(n) => id.username.as_deref().is_some_and(|u| n.matches(u)),
            Who::Client(n) => n.matches(&id.client_id),
            Who::Cn(n) => id
                .cert
                .as_ref()
                .and_then(|c| c.common_name.as_deref())
                .is_some_and(|cn| n.matches(cn)),
            Who::Group(g) => id.groups.iter().any(|x| x == g),
            Who::Ip { net, prefix } => ip_in(id.peer, *net, *prefix),
        }
    }
}

impl fmt::Display for AclRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)
    }
}

fn parse(line: &str, with_who: bool, origin: String) -> Result<AclRule, String> {
    let mut tokens = line.split_whitespace();
    let permission = match tokens.next() {
        Some("allow") => Permission::Allow,
        Some("deny") => Permission::Deny,
        Some(other) => return Err(format!("expected allow or deny, found `{}`", clip(other))),
        None => return Err("empty rule".to_string()),
    };
    let who = if with_who {
        let w = tokens
            .next()
            .ok_or("missing who (all, anonymous, user:, client:, cn:, group:, ip:)")?;
        parse_who(w)?
    } else {
        Who::All
    };
    let actions = match tokens.next() {
        Some("publish") => ActionSet::Publish,
        Some("subscribe") => ActionSet::Subscribe,
        Some("all") => ActionSet::All,
        Some(other) => {
            return Err(format!(
                "expected publish, subscribe or all, found `{}`",
                clip(other)
            ))
        }
        None => return Err("missing action (publish, subscribe, all)".to_string()),
    };
    let raw_topic = tokens.next().ok_or("missing topic")?;
    let (topic, exact) = match raw_topic.strip_prefix("eq:") {
        Some(t) => (t, true),
        None => (raw_topic, false),
    };
    check_topic(topic)?;
    let mut qos_mask = 0b111;
    let mut retain = None;
    for cond in tokens {
        if let Some(v) = cond.strip_prefix("qos=") {
            qos_mask = 0;
            for q in v.split(',') {
                match q {
                    "0" => qos_mask |= 1,
                    "1" => qos_mask |= 2,
                    "2" => qos_mask |= 4,
                    _ => return Err(format!("qos: expected 0, 1 or 2, found `{}`", clip(q))),
                }
            }
        } else if let Some(v) = cond.strip_prefix("retain=") {
            retain = Some(match v {
                "true" => true,
                "false" => false,
                _ => {
                    return Err(format!(
                        "retain: expected true or false, found `{}`",
                        clip(v)
                    ))
                }
            });
        } else {
            return Err(format!(
                "unexpected `{}` (conditions are qos=0,1,2 and retain=true|false; topics cannot contain spaces)",
                clip(cond)
            ));
        }
    }
    Ok(AclRule {
        permission,
        who,
        actions,
        topic: topic.to_string(),
        exact,
        qos_mask,
        retain,
        origin,
    })
}

fn parse_who(w: &str) -> Result<Who, String> {
    if w == "all" {
        return Ok(Who::All);
    }
    if w == "anonymous" {
        return Ok(Who::Anonymous);
    }
    let (kind, value) = w.split_once(':').ok_or_else(|| {
        format!(
            "expected who (all, anonymous, user:NAME, client:ID, cn:NAME, group:NAME, ip:CIDR), found `{}`",
            clip(w)
        )
    })?;
    let bad = |e: String| format!("{kind}: {e}");
    match kind {
        "user" => Name::parse(value).map(Who::User).map_err(bad),
        "client" => Name::parse(value).map(Who::Client).map_err(bad),
        "cn" => Name::parse(value).map(Who::Cn).map_err(bad),
        "group" if !value.is_empty() => Ok(Who::Group(value.to_string())),
        "group" => Err("group: empty name".to_string()),
        "ip" => parse_cidr(value).map(|(net, prefix)| Who::Ip { net, prefix }),
        _ => Err(format!(
            "unknown who `{}` (all, anonymous, user:, client:, cn:, group:, ip:)",
            clip(kind)
        )),
    }
}

fn parse_cidr(s: &str) -> Result<(IpAddr, u8), String> {
    let (a, p) = match s.split_once('/') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addr: IpAddr = a
        .parse()
        .map_err(|_| format!("ip: `{}` is not an address or CIDR", clip(s)))?;
    let max = if addr.is_ipv4() { 32 } else { 128 };
    let prefix = match p {
        Some(p) => p
            .parse::<u8>()
            .ok()
            .filter(|p| *p <= max)
            .ok_or_else(|| format!("ip: prefix of `{}` must be 0..={max}", clip(s)))?,
        None => max,
    };
    Ok((addr, prefix))
}

pub(crate) fn ip_in(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match (net, ip) {
        (IpAddr::V4(n), IpAddr::V4(a)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(n) & mask == u32::from(a) & mask
        }
        (IpAddr::V6(n), IpAddr::V6(a)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(n) & mask == u128::from(a) & mask
        }
        _ => false,
    }
}

const PLACEHOLDERS: &[&str] = &["${username}", "${clientid}", "${cert_common_name}"];

fn check_topic(t: &str) -> Result<(), String> {
    if t.is_empty() {
        return Err("empty topic".to_string());
    }
    let mut rest = t;
    while let Some(i) = rest.find("${") {
        let tail = &rest[i..];
        match PLACEHOLDERS.iter().find(|p| tail.starts_with(**p)) {
            Some(p) => rest = &tail[p.len()..],
            None => {
                return Err(format!(
                    "unknown placeholder in `{}` (use ${{username}}, ${{clientid}} or ${{cert_common_name}})",
                    clip(t)
                ))
            }
        }
    }
    let levels: Vec<&str> = t.split('/').collect();
    for (i, l) in levels.iter().enumerate() {
        if l.contains('#') && (*l != "#" || i + 1 != levels.len()) {
            return Err(format!("`#` must be a whole last level in `{}`", clip(t)));
        }
        if l.contains('+') && *l != "+" {
            return Err(format!("`+` must be a whole level in `{}`", clip(t)));
        }
    }
    Ok(())
}

/// The rule topic with placeholders filled in, or `None` when a value is missing or could
/// change the topic's structure.
fn substitute(topic: &str, id: &Identity) -> Option<String> {
    if !topic.contains("${") {
        return Some(topic.to_string());
    }
    let safe = |v: Option<&str>| -> Option<String> {
        let v = v?;
        if v.is_empty() || v.contains(['+', '#', '/', '\0']) {
            return None;
        }
        Some(v.to_string())
    };
    let mut out = topic.to_string();
    if out.contains("${username}") {
        out = out.replace("${username}", &safe(id.username.as_deref())?);
    }
    if out.contains("${clientid}") {
        out = out.replace("${clientid}", &safe(Some(&id.client_id))?);
    }
    if out.contains("${cert_common_name}") {
        let cn = id.cert.as_ref().and_then(|c| c.common_name.as_deref());
        out = out.replace("${cert_common_name}", &safe(cn)?);
    }
    Some(out)
}

/// True if every topic matched by `sub` (a filter, or a plain topic name) is matched by
/// `rule`. For a topic name this is ordinary MQTT matching, including the rule that a
/// leading wildcard does not match a topic starting with `$`.
pub fn covers(rule: &str, sub: &str) -> bool {
    let mut r = rule.split('/');
    let mut s = sub.split('/');
    let mut first = true;
    loop {
        match (r.next(), s.next()) {
            (Some("#"), Some(sl)) => return !(first && sl.starts_with('$')),
            // `a/#` also matches `a` itself.
            (Some("#"), None) => return true,
            (Some("+"), Some(sl)) => {
                if sl == "#" || (first && sl.starts_with('$')) {
                    return false;
                }
            }
            (Some(rl), Some(sl)) => {
                if rl != sl {
                    return false;
                }
            }
            (None, None) => return true,
            (None, Some(_)) => return false,
            (Some(_), None) => return false,
        }
        first = false;
    }
}

/// The filter behind a shared subscription (`$share/<group>/<filter>`), else `filter`.
pub fn unshare(filter: &str) -> &str {
    match filter.strip_prefix("$share/") {
        Some(rest) => rest.split_once('/').map(|(_, f)| f).unwrap_or(filter),
        None => filter,
    }
}

fn clip(s: &str) -> String {
    s.chars().take(64).collect()
}

/// Parses an ACL file, reporting every bad line as `file:line: message`.
pub fn parse_file(text: &str, file_name: &str) -> Result<Vec<AclRule>, Vec<String>> {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let origin = format!("{file_name}:{}", i + 1);
        match AclRule::parse_file_line(line, origin.clone()) {
            Ok(r) => rules.push(r),
            Err(e) => errors.push(format!("{origin}: {e}")),
        }
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coverage() {
        for (rule, sub, want) in [
            ("#", "a/b", true),
            ("#", "#", true),
            ("#", "$SYS/x", false),
            ("#", "$SYS/#", false),
            ("$SYS/#", "$SYS/#", true),
            ("$SYS/#", "$SYS/broker/uptime", true),
            ("+/b", "$SYS/b", false),
            ("a/#", "a", true),
            ("a/#", "a/+/c", true),
            ("a/#", "#", false),
            ("a/+", "a/#", false),
            ("a/+", "a/+", true),
            ("a/+", "a/b", true),
            ("a/+", "a/b/c", false),
            ("a/b", "a/+", false),
            ("a/b", "a/b", true),
            ("a/b", "a/b/c", false),
            ("a/b/c", "a/b", false),
            ("+/+", "+/#", false),
        ] {
            assert_eq!(covers(rule, sub), want, "{rule} covers {sub}");
        }
    }

    #[test]
    fn unshare_strips_group() {
        assert_eq!(unshare("$share/g/a/b"), "a/b");
        assert_eq!(unshare("a/b"), "a/b");
        assert_eq!(unshare("$share/g"), "$share/g");
    }

    #[test]
    fn file_errors_name_every_line() {
        let text = "# ok\nallow all publish a/#\nallow bob publish a\nallow user:x shout a\nallow all publish a/b#\ndeny all all x qos=3\nallow all all ${nope}/x\nallow all all\nallow ip:10.0.0.0/40 all a\n";
        let errs = parse_file(text, "acl.conf").expect_err("bad");
        let lines: Vec<&str> = errs
            .iter()
            .map(|e| e.split(": ").next().unwrap_or(""))
            .collect();
        assert_eq!(
            lines,
            [
                "acl.conf:3",
                "acl.conf:4",
                "acl.conf:5",
                "acl.conf:6",
                "acl.conf:7",
                "acl.conf:8",
                "acl.conf:9"
            ],
            "{errs:#?}"
        );
    }
}
