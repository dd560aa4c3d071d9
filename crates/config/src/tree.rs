//! A small value tree that remembers where every key and value came from.
//!
//! The TOML file and the `RAMPART_*` environment overrides are merged into one tree before it
//! is decoded, so that both go through the same typed checks and both report errors at their
//! own source: a file line, or the name of the environment variable.

use crate::{ConfigError, ENV_PREFIX, RESERVED_ENV_VARS};

/// Where a key or a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Origin {
    /// A 1-based line of the config file, or `None` when the parser gave no position.
    File(Option<usize>),
    /// An environment variable (its full name).
    Env(String),
    /// A built-in default (for example the loopback listeners of zero-config mode).
    Default,
}

#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub origin: Origin,
    pub kind: Kind,
}

#[derive(Debug, Clone)]
pub(crate) enum Kind {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Datetime(String),
    Array(Vec<Node>),
    Table(Table),
    /// Text of an environment variable: it takes the type of the field it lands on.
    Raw(String),
}

impl Kind {
    /// The noun used in "expected X, found Y" messages.
    pub fn noun(&self) -> String {
        match self {
            Kind::Str(s) => format!("the string \"{}\"", clip(s)),
            Kind::Int(i) => format!("the integer {i}"),
            Kind::Float(f) => format!("the float {f}"),
            Kind::Bool(b) => format!("the boolean {b}"),
            Kind::Datetime(d) => format!("the date-time {d}"),
            Kind::Array(_) => "an array".to_string(),
            Kind::Table(_) => "a table".to_string(),
            Kind::Raw(s) => format!("`{}`", clip(s)),
        }
    }
}

/// Keeps echoed values short so that a huge value cannot flood the error output.
/// Control characters are escaped so that every error stays on one line.
pub(crate) fn clip(s: &str) -> String {
    const MAX: usize = 64;
    let mut out = String::new();
    for c in s.chars().take(MAX) {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    if s.chars().count() > MAX {
        out.push_str("...");
    }
    out
}

#[derive(Debug, Clone)]
pub(crate) struct Entry {
    pub key: String,
    pub key_origin: Origin,
    pub node: Node,
}

#[derive(Debug, Clone, Default)]
pub(crate) struct Table {
    pub entries: Vec<Entry>,
}

impl Table {
    pub fn get(&self, key: &str) -> Option<&Entry> {
        self.entries.iter().find(|e| e.key == key)
    }

    fn get_mut(&mut self, key: &str) -> Option<&mut Entry> {
        self.entries.iter_mut().find(|e| e.key == key)
    }

    pub fn insert(&mut self, key: &str, key_origin: Origin, node: Node) {
        match self.get_mut(key) {
            Some(entry) => {
                entry.key_origin = key_origin;
                entry.node = node;
            }
            None => self.entries.push(Entry {
                key: key.to_string(),
                key_origin,
                node,
            }),
        }
    }
}

/// Maps byte offsets to 1-based line numbers.
struct Lines {
    starts: Vec<usize>,
}

impl Lines {
    fn new(text: &str) -> Lines {
        let mut starts = vec![0];
        starts.extend(text.match_indices('\n').map(|(i, _)| i + 1));
        Lines { starts }
    }

    fn line(&self, offset: usize) -> usize {
        match self.starts.binary_search(&offset) {
            Ok(i) => i + 1,
            Err(i) => i,
        }
    }

    fn origin(&self, span: Option<std::ops::Range<usize>>) -> Option<Origin> {
        span.map(|s| Origin::File(Some(self.line(s.start))))
    }
}

/// Parses TOML text into a tree; a syntax error is returned with its line.
pub(crate) fn parse_toml(text: &str, file: &str) -> Result<Table, ConfigError> {
    let lines = Lines::new(text);
    let doc = toml_edit::ImDocument::parse(text).map_err(|e| {
        let line = e.span().map(|s| lines.line(s.start));
        // toml_edit's message can span several lines; keep the report one line per error.
        let message = e
            .message()
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        ConfigError {
            file: file.to_string(),
            line,
            key: String::new(),
            message: format!("TOML syntax error: {message}"),
        }
    })?;
    Ok(conv_table(doc.as_table(), &lines))
}

fn conv_table(t: &toml_edit::Table, lines: &Lines) -> Table {
    let mut out = Table::default();
    for (k, item) in t.iter() {
        let key_origin = lines
            .origin(t.key(k).and_then(|k| k.span()))
            .unwrap_or(Origin::File(None));
        if let Some(node) = conv_item(item, &key_origin, lines) {
            out.entries.push(Entry {
                key: k.to_string(),
                key_origin,
                node,
            });
        }
    }
    out
}

fn conv_inline_table(t: &toml_edit::InlineTable, lines: &Lines) -> Table {
    let mut out = Table::default();
    for (k, v) in t.iter() {
        let key_origin = lines
            .origin(t.key(k).and_then(|k| k.span()))
            .unwrap_or(Origin::File(None));
        let node = conv_value(v, &key_origin, lines);
        out.entries.push(Entry {
            key: k.to_string(),
            key_origin,
            node,
        });
    }
    out
}

fn conv_item(item: &toml_edit::Item, fallback: &Origin, lines: &Lines) -> Option<Node> {
    let origin = lines
        .origin(item.span())
        .unwrap_or_else(|| fallback.clone());
    let kind = match item {
        toml_edit::Item::None => return None,
        toml_edit::Item::Value(v) => return Some(conv_value(v, fallback, lines)),
        toml_edit::Item::Table(t) => Kind::Table(conv_table(t, lines)),
        toml_edit::Item::ArrayOfTables(a) => Kind::Array(
            a.iter()
                .map(|t| Node {
                    origin: lines.origin(t.span()).unwrap_or_else(|| origin.clone()),
                    kind: Kind::Table(conv_table(t, lines)),
                })
                .collect(),
        ),
    };
    Some(Node { origin, kind })
}

fn conv_value(v: &toml_edit::Value, fallback: &Origin, lines: &Lines) -> Node {
    use toml_edit::Value as V;
    let origin = lines.origin(v.span()).unwrap_or_else(|| fallback.clone());
    let kind = match v {
        V::String(s) => Kind::Str(s.value().clone()),
        V::Integer(i) => Kind::Int(*i.value()),
        V::Float(f) => Kind::Float(*f.value()),
        V::Boolean(b) => Kind::Bool(*b.value()),
        V::Datetime(d) => Kind::Datetime(d.value().to_string()),
        V::Array(a) => Kind::Array(a.iter().map(|v| conv_value(v, &origin, lines)).collect()),
        V::InlineTable(t) => Kind::Table(conv_inline_table(t, lines)),
    };
    Node { origin, kind }
}

/// Overlays every `RAMPART_<SECTION>__<KEY>` variable on the tree. Variables that cannot be
/// placed are reported; variables placed on keys the schema does not know are reported later
/// by the decoder as unknown keys, under the variable's name.
/// Returns the names of the variables that were placed.
pub(crate) fn apply_env(
    root: &mut Table,
    env: &[(String, String)],
    errors: &mut Vec<ConfigError>,
) -> Vec<String> {
    let mut applied = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
            continue;
        };
        if RESERVED_ENV_VARS.contains(&name.as_str()) {
            continue;
        }
        let err = |key: String, message: String| ConfigError {
            file: format!("env {name}"),
            line: None,
            key,
            message,
        };
        if !rest.contains("__") {
            // Only names that look like a misspelt override are errors (RAMPART_MQTT_X);
            // other RAMPART_ variables (RAMPART_BIN for a test harness) belong to others.
            let lower = rest.to_ascii_lowercase();
            let looks_like_override = crate::SECTIONS
                .iter()
                .any(|s| lower == *s || lower.starts_with(&format!("{s}_")));
            if !looks_like_override {
                continue;
            }
            errors.push(err(
                String::new(),
                format!(
                    "unknown {ENV_PREFIX} variable; overrides are spelled \
                     {ENV_PREFIX}<SECTION>__<KEY>, e.g. {ENV_PREFIX}MQTT__MAX_PACKET_SIZE"
                ),
            ));
            continue;
        }
        let segs: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
        // Same spelling as decoder errors: `listeners[0].bind`.
        let dotted = segs.iter().fold(String::new(), |acc, seg| {
            if seg.parse::<usize>().is_ok() {
                format!("{acc}[{seg}]")
            } else if acc.is_empty() {
                seg.clone()
            } else {
                format!("{acc}.{seg}")
            }
        });
        if segs.iter().any(String::is_empty) {
            errors.push(err(
                dotted,
                "empty key segment in variable name".to_string(),
            ));
            continue;
        }
        let origin = Origin::Env(name.clone());
        match insert(root, &segs, value, &origin) {
            Ok(()) => applied.push(name.clone()),
            Err(message) => errors.push(err(dotted, message)),
        }
    }
    applied.sort();
    applied
}

fn raw(value: &str, origin: &Origin) -> Node {
    Node {
        origin: origin.clone(),
        kind: Kind::Raw(value.to_string()),
    }
}

fn insert(table: &mut Table, segs: &[String], value: &str, origin: &Origin) -> Result<(), String> {
    let (seg, rest) = match segs.split_first() {
        Some(x) => x,
        None => return Err("empty variable name".to_string()),
    };
    if rest.is_empty() {
        table.insert(seg, origin.clone(), raw(value, origin));
        return Ok(());
    }
    if table.get(seg).is_none() {
        // A numeric next segment addresses a list element; anything else a sub-table.
        let kind = if rest[0].parse::<usize>().is_ok() {
            Kind::Array(Vec::new())
        } else {
            Kind::Table(Table::default())
        };
        let node = Node {
            origin: origin.clone(),
            kind,
        };
        table.insert(seg, origin.clone(), node);
    }
    let entry = match table.get_mut(seg) {
        Some(e) => e,
        None => return Err("internal error: inserted key vanished".to_string()),
    };
    match &mut entry.node.kind {
        Kind::Table(t) => insert(t, rest, value, origin),
        Kind::Array(items) => {
            let Ok(idx) = rest[0].parse::<usize>() else {
                return Err(format!(
                    "`{seg}` is a list: the segment after it must be an index such as 0"
                ));
            };
            let len = items.len();
            if idx > len {
                return Err(format!(
                    "index {idx} is past the end of `{seg}` ({len} entries); \
                     the next new entry is {len}"
                ));
            }
            if idx == len {
                items.push(Node {
                    origin: origin.clone(),
                    kind: Kind::Table(Table::default()),
                });
            }
            let item = &mut items[idx];
            if rest.len() == 1 {
                *item = raw(value, origin);
                return Ok(());
            }
            match &mut item.kind {
                Kind::Table(t) => insert(t, &rest[1..], value, origin),
                _ => Err(format!("`{seg}[{idx}]` is not a table")),
            }
        }
        _ => Err(format!("`{seg}` is not a table")),
    }
}
