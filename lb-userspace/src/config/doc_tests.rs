//! Keeps the configuration reference honest: `docs/config.md` documents
//! exactly the keys the parser accepts (the serde structs of [`super::raw`],
//! whose field lists serde itself reports), and the README's minimal
//! configuration is a valid one.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use serde::de::{self, Deserialize, Deserializer, Visitor};

use super::raw::{RawApi, RawBackend, RawConfig, RawDataplane, RawHealth, RawListener};
use super::Config;

/// A deserializer that only records the field list serde passes to
/// `deserialize_struct` (every accepted key, renames applied) and fails.
struct FieldNames<'a>(&'a mut Option<&'static [&'static str]>);

impl<'de> Deserializer<'de> for FieldNames<'_> {
    type Error = de::value::Error;

    fn deserialize_any<V: Visitor<'de>>(self, _: V) -> Result<V::Value, Self::Error> {
        Err(de::Error::custom("not a struct"))
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        _visitor: V,
    ) -> Result<V::Value, Self::Error> {
        *self.0 = Some(fields);
        Err(de::Error::custom("field names recorded"))
    }

    serde::forward_to_deserialize_any! {
        bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string
        bytes byte_buf option unit unit_struct newtype_struct seq tuple
        tuple_struct map enum identifier ignored_any
    }
}

/// The keys the parser accepts in the table `T` deserializes.
fn keys_of<T: for<'de> Deserialize<'de>>() -> BTreeSet<String> {
    let mut fields = None;
    let _ = T::deserialize(FieldNames(&mut fields));
    let fields = fields.expect("a serde struct reports its fields");
    fields.iter().map(|f| f.to_string()).collect()
}

fn repo_file(rel: &str) -> String {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(rel);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The tables of a reference page and the keys each documents: a heading
/// ``## `[name]` `` or ``## `[[name]]` `` opens a table's section (any
/// other `##` heading closes it), and a table row whose first cell is a
/// backticked key (`` | `key` | … ``) documents that key.
fn documented(text: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut tables: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut current: Option<String> = None;
    let mut fenced = false;
    for line in text.lines() {
        if line.starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        if let Some(heading) = line.strip_prefix("## ") {
            current = heading
                .trim()
                .strip_prefix('`')
                .and_then(|h| h.strip_suffix('`'))
                .map(|h| h.trim_matches(|c| c == '[' || c == ']').to_string());
            if let Some(name) = &current {
                tables.entry(name.clone()).or_default();
            }
            continue;
        }
        let (Some(table), Some(row)) = (&current, line.strip_prefix("| `")) else {
            continue;
        };
        let Some((key, _)) = row.split_once('`') else {
            continue;
        };
        if !key.is_empty()
            && key
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
        {
            tables.get_mut(table).unwrap().insert(key.to_string());
        }
    }
    tables
}

fn differences(
    table: &str,
    documented: &BTreeSet<String>,
    parsed: &BTreeSet<String>,
) -> Vec<String> {
    let mut problems = Vec::new();
    for k in parsed.difference(documented) {
        problems.push(format!(
            "[{table}] {k}: accepted by the parser, missing from docs/config.md"
        ));
    }
    for k in documented.difference(parsed) {
        problems.push(format!(
            "[{table}] {k}: documented in docs/config.md, unknown to the parser"
        ));
    }
    problems
}

#[test]
fn config_reference_documents_exactly_the_parsers_keys() {
    let doc = documented(&repo_file("docs/config.md"));
    let parsed: BTreeMap<&str, BTreeSet<String>> = BTreeMap::from([
        ("dataplane", keys_of::<RawDataplane>()),
        ("api", keys_of::<RawApi>()),
        ("health", keys_of::<RawHealth>()),
        ("backend", keys_of::<RawBackend>()),
        ("listener", keys_of::<RawListener>()),
    ]);
    let mut problems = Vec::new();
    // The top-level tables themselves.
    let tables: BTreeSet<String> = doc.keys().cloned().collect();
    let top: BTreeSet<String> = keys_of::<RawConfig>();
    problems.extend(differences("top level", &tables, &top));
    for (table, keys) in &parsed {
        let none = BTreeSet::new();
        problems.extend(differences(table, doc.get(*table).unwrap_or(&none), keys));
    }
    // Every table the parser knows is checked above: a new one must be
    // added to `parsed`.
    let checked: BTreeSet<String> = parsed.keys().map(|k| k.to_string()).collect();
    assert_eq!(top, checked, "a top-level table is not compared");
    assert!(
        problems.is_empty(),
        "docs/config.md is stale:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_doc_parser_finds_tables_and_keys_and_skips_code() {
    let text = "## `[a]`\n| `x` | 1 |\n| key | h |\n```\n| `in_code` |\n```\n\
                ## Other\n| `y` | not a key of a table |\n## `[[b]]`\n| `z_z` | 2 |\n";
    let doc = documented(text);
    assert_eq!(doc.len(), 2);
    assert_eq!(doc["a"], BTreeSet::from(["x".to_string()]));
    assert_eq!(doc["b"], BTreeSet::from(["z_z".to_string()]));
    // And the parser's side sees renames and every field.
    assert!(keys_of::<RawConfig>().contains("backend"));
    assert_eq!(keys_of::<RawBackend>().len(), 3);
}

#[test]
fn readmes_minimal_configuration_is_valid() {
    let readme = repo_file("README.md");
    let at = readme
        .find("## A minimal configuration")
        .expect("README has a section \"A minimal configuration\"");
    let block = readme[at..]
        .split("```toml\n")
        .nth(1)
        .and_then(|rest| rest.split("```").next())
        .expect("a ```toml block in that section");
    if let Err(e) = Config::from_toml_str(block) {
        panic!("the README's minimal configuration is rejected: {e}");
    }
}
