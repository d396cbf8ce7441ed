//! The closure to pack: read from any of the forms Nix and nixpkgs produce,
//! checked to be closed and present on disk.
//!
//! Accepted inputs (detected from what the path is):
//! - a nixpkgs `closureInfo` output directory: its `registration` file;
//! - a registration file ([`super::registration`]);
//! - the structured-attrs JSON Nix gives a builder (`.attrs.json`,
//!   `$NIX_ATTRS_JSON_FILE`), whose `exportReferencesGraph.<attr>` list holds
//!   `{path, narHash, narSize, references, …}` objects.

use anyhow::{Context, Result, bail};
use camino::{Utf8Path, Utf8PathBuf};
use serde::Deserialize;

use super::hash::NixHash;
use super::registration::{self, PathInfo, Registration};
use super::store_path::StorePath;

/// A closed set of store paths, sorted by path.
#[derive(Debug, Clone)]
pub struct Closure {
    pub paths: Vec<PathInfo>,
    /// The file it was read from, for messages.
    file: Option<Utf8PathBuf>,
    /// Whether its hashes are written as SRI (`nix path-info --json`), so
    /// that messages show hashes as the file does.
    sri: bool,
}

/// One path info of a JSON closure, its fields' types checked.
struct JsonPathInfo {
    path: String,
    nar_hash: String,
    nar_size: u64,
    references: Vec<String>,
    deriver: Option<String>,
}

/// What a JSON value is, for messages: `a string ("12")`, `null`, ….
fn kind(v: &serde_json::Value) -> String {
    use serde_json::Value as V;
    match v {
        V::Null => "null".into(),
        V::Bool(b) => format!("{b}"),
        V::Number(n) => format!("the number {n}"),
        V::String(s) => format!("a string ({s:?})"),
        V::Array(_) => "a list".into(),
        V::Object(_) => "an object".into(),
    }
}

fn string(key: &str, v: serde_json::Value) -> Result<String, String> {
    match v {
        serde_json::Value::String(s) => Ok(s),
        other => Err(format!("{key} is {}; it must be a string", kind(&other))),
    }
}

fn nar_size(v: serde_json::Value) -> Result<u64, String> {
    use serde_json::Value as V;
    match &v {
        V::Number(n) => n.as_u64().ok_or_else(|| {
            // serde_json reads an integer past u64 as a float.
            if n.as_f64().is_some_and(|f| f >= u64::MAX as f64) {
                // Its float form (1.8446744073709552e19) would only puzzle.
                format!(
                    "narSize is too large: no NAR is larger than {} bytes (2^64 - 1); is the \
                     file damaged?",
                    u64::MAX
                )
            } else {
                format!("narSize {n} is not a whole number of bytes")
            }
        }),
        V::String(s) => Err(format!(
            "narSize is a string ({s:?}); it must be a number of bytes, without quotes"
        )),
        other => Err(format!(
            "narSize is {}; it must be a number of bytes",
            kind(other)
        )),
    }
}

fn references(v: serde_json::Value) -> Result<Vec<String>, String> {
    match v {
        serde_json::Value::Array(list) => list
            .into_iter()
            .enumerate()
            .map(|(i, r)| match r {
                serde_json::Value::String(s) => Ok(s),
                other => Err(format!(
                    "references[{i}] is {}; it must be a store path",
                    kind(&other)
                )),
            })
            .collect(),
        serde_json::Value::Null => Err(
            "references is null; it must be a list of store paths ([] for a path without \
             references)"
                .into(),
        ),
        other => Err(format!(
            "references is {}; it must be a list of store paths",
            kind(&other)
        )),
    }
}

/// Checks each field by hand, so that a wrong type names its field (serde's
/// derived errors say "invalid type: string, expected u64" and no more);
/// serde_json adds the line.
impl<'de> Deserialize<'de> for JsonPathInfo {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = JsonPathInfo;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a path info object ({\"path\": …, \"narHash\": …, …})")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<JsonPathInfo, A::Error> {
                use serde::de::Error;
                use serde_json::Value;
                let (mut path, mut hash, mut size, mut refs, mut deriver) =
                    (None, None, None, None, None);
                while let Some(key) = map.next_key::<String>()? {
                    let checked = match key.as_str() {
                        "path" => string(&key, map.next_value()?).map(|v| path = Some(v)),
                        "narHash" => string(&key, map.next_value()?).map(|v| hash = Some(v)),
                        "narSize" => nar_size(map.next_value()?).map(|v| size = Some(v)),
                        "references" => references(map.next_value()?).map(|v| refs = Some(v)),
                        "deriver" => match map.next_value::<Value>()? {
                            Value::Null => Ok(()),
                            v => string(&key, v).map(|v| deriver = Some(v)),
                        },
                        _ => {
                            map.next_value::<serde::de::IgnoredAny>()?;
                            Ok(())
                        }
                    };
                    checked.map_err(A::Error::custom)?;
                }
                let missing = |key: &str| A::Error::custom(format!("the path info has no {key}"));
                Ok(JsonPathInfo {
                    path: path.ok_or_else(|| missing("path"))?,
                    nar_hash: hash.ok_or_else(|| missing("narHash"))?,
                    nar_size: size.ok_or_else(|| missing("narSize"))?,
                    references: refs.unwrap_or_default(),
                    deriver,
                })
            }
        }
        d.deserialize_map(V)
    }
}

/// The list under `attr` in a structured-attrs object, read from the text
/// (not from a [`serde_json::Value`]) so that an error has its line.
struct AttrList<'a>(&'a str);

impl<'de> serde::de::DeserializeSeed<'de> for AttrList<'_> {
    type Value = Vec<JsonPathInfo>;
    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for AttrList<'_> {
    type Value = Vec<JsonPathInfo>;
    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut list = Vec::new();
        while let Some(key) = map.next_key::<String>()? {
            if key == self.0 {
                list = map.next_value()?;
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(list)
    }
}

/// serde_json's error as `line N: what` (it says "what at line N column C").
fn located(e: serde_json::Error) -> anyhow::Error {
    let text = e.to_string();
    let suffix = format!(" at line {} column {}", e.line(), e.column());
    let what = text.strip_suffix(&suffix).unwrap_or(&text);
    anyhow::anyhow!("line {}: {what}", e.line())
}

/// Larger than any closure's registration or JSON (a NixOS system's is a
/// few MiB): a guard against `/dev/zero` or the wrong file.
const MAX_CLOSURE_BYTES: u64 = 1 << 30;

/// A JSON value in which an object holding a key twice is an error
/// (serde_json would keep the last value silently): a closure file that
/// says two things about one path is not trusted.
struct Strict(serde_json::Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> serde::de::Visitor<'de> for StrictVisitor {
    type Value = serde_json::Value;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_i64<E>(self, v: i64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_u64<E>(self, v: u64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_f64<E>(self, v: f64) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(v.into())
    }
    fn visit_unit<E>(self) -> Result<Self::Value, E> {
        Ok(serde_json::Value::Null)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut list = Vec::new();
        while let Some(Strict(v)) = seq.next_element()? {
            list.push(v);
        }
        Ok(list.into())
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut object = serde_json::Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                return Err(serde::de::Error::custom(format!(
                    "key {key:?} appears twice in one object"
                )));
            }
            let Strict(v) = map.next_value()?;
            object.insert(key, v);
        }
        Ok(object.into())
    }
}

impl Closure {
    /// Read the closure at `input`; `attr` names the JSON key of the
    /// `exportReferencesGraph` entry.
    pub fn load(input: &Utf8Path, attr: &str) -> Result<Self> {
        let file: Utf8PathBuf = if input.is_dir() {
            let reg = input.join("registration");
            if reg.is_dir() {
                bail!(
                    "{reg} is a directory; a closureInfo output holds a `registration` file: \
                     pass a closureInfo output, a registration file or a structured-attrs JSON file"
                );
            }
            if !reg.is_file() {
                bail!(
                    "{input} is a directory without a `registration` file; pass a closureInfo \
                     output, a registration file or a structured-attrs JSON file"
                );
            }
            reg
        } else {
            input.to_owned()
        };
        let meta =
            std::fs::metadata(&file).with_context(|| format!("cannot read closure {file}"))?;
        if !meta.is_file() {
            bail!(
                "closure {file} is not a regular file; pass a closureInfo output, a registration file or a structured-attrs JSON file"
            );
        }
        if meta.len() > MAX_CLOSURE_BYTES {
            bail!(
                "closure {file} has {} bytes, more than any real closure ({MAX_CLOSURE_BYTES}); is it the right file?",
                meta.len()
            );
        }
        let bytes = std::fs::read(&file).with_context(|| format!("cannot read closure {file}"))?;
        let text = String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            let bytes = e.as_bytes();
            let line = bytes[..at].iter().filter(|&&b| b == b'\n').count() + 1;
            let column = at
                - bytes[..at]
                    .iter()
                    .rposition(|&b| b == b'\n')
                    .map_or(0, |i| i + 1)
                + 1;
            anyhow::anyhow!(
                "in closure {file}: line {line} is not UTF-8 (at byte {column} of the line); \
                 a closure holds only store paths, hashes and numbers: is it the right file?"
            )
        })?;
        // An editor's byte order mark is not part of either format.
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let (paths, sri) = if text.trim_start().starts_with(['{', '[']) {
            Self::from_json_with_form(text, attr)
                .with_context(|| format!("in structured-attrs JSON {file}"))?
        } else {
            let paths =
                registration::parse(text).with_context(|| format!("in registration {file}"))?;
            (paths, false)
        };
        let mut closure = Self::new(paths).with_context(|| format!("in closure {file}"))?;
        closure.file = Some(file);
        closure.sri = sri;
        Ok(closure)
    }

    /// The structured-attrs object (`{"<attr>": [path info, …], …}`), or a
    /// bare list of path infos (`nix path-info --json --recursive`); and
    /// whether its first hash is SRI.
    fn from_json_with_form(text: &str, attr: &str) -> Result<(Vec<PathInfo>, bool)> {
        let Strict(value) = serde_json::from_str(text)?;
        let (list, attr, key) = match value {
            serde_json::Value::Object(mut top) => {
                let list = top.remove(attr).with_context(|| {
                    let keys: Vec<&str> = top.keys().map(String::as_str).collect();
                    format!(
                        "no key {attr:?} (keys: {}); set --closure-attr to the name used in \
                         `exportReferencesGraph.<name>`",
                        keys.join(", ")
                    )
                })?;
                (list, format!("key {attr:?}"), Some(attr))
            }
            list => (list, "the list".to_owned(), None),
        };
        if !list.is_array() {
            bail!("{attr} is not a list of path infos");
        }
        // Read again, typed, from the text: a field of the wrong type is
        // named with its line.
        let list: Vec<JsonPathInfo> = match key {
            None => serde_json::from_str(text).map_err(located)?,
            Some(key) => {
                use serde::de::DeserializeSeed;
                let mut de = serde_json::Deserializer::from_str(text);
                AttrList(key).deserialize(&mut de).map_err(located)?
            }
        };
        let sri = list.first().is_some_and(|j| !j.nar_hash.contains(':'));
        let paths = list
            .into_iter()
            .enumerate()
            .map(|(i, j)| {
                let ctx = || format!("entry {i} of {attr} ({})", j.path);
                Ok(PathInfo {
                    path: StorePath::from_absolute_path(&j.path).with_context(ctx)?,
                    nar_hash: NixHash::parse_nar(&j.nar_hash).with_context(ctx)?,
                    nar_size: j.nar_size,
                    deriver: match j.deriver.as_deref() {
                        None | Some("") => None,
                        Some(d) => Some(StorePath::from_absolute_path(d).with_context(ctx)?),
                    },
                    references: j
                        .references
                        .iter()
                        .map(|r| StorePath::from_absolute_path(r))
                        .collect::<Result<_, _>>()
                        .with_context(ctx)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok((paths, sri))
    }

    #[cfg(test)]
    fn from_json(text: &str, attr: &str) -> Result<Vec<PathInfo>> {
        Ok(Self::from_json_with_form(text, attr)?.0)
    }

    /// Sort, and check that every path appears once and every reference is
    /// in the closure.
    pub fn new(mut paths: Vec<PathInfo>) -> Result<Self> {
        if paths.is_empty() {
            bail!("the closure is empty: it must list at least the system's toplevel");
        }
        paths.sort_by(|a, b| a.path.cmp(&b.path));
        for info in &mut paths {
            info.references.sort();
            info.references.dedup();
        }
        for w in paths.windows(2) {
            if w[0].path == w[1].path {
                bail!("{} is listed twice", w[0].path);
            }
        }
        for info in &paths {
            for r in &info.references {
                if paths.binary_search_by(|p| p.path.cmp(r)).is_err() {
                    bail!(
                        "the closure is not closed: {} refers to {r}, which is not listed; \
                         build the closure with exportReferencesGraph or closureInfo of the roots",
                        info.path
                    );
                }
            }
        }
        Ok(Closure {
            paths,
            file: None,
            sri: false,
        })
    }

    /// Check that every path exists below `root` (`/` for the real store).
    pub fn check_present(&self, root: &Utf8Path) -> Result<()> {
        for info in &self.paths {
            let on_disk = self.source(root, &info.path);
            std::fs::symlink_metadata(&on_disk).with_context(|| {
                let listed = match &self.file {
                    Some(f) => format!(", listed in {f},"),
                    None => ",".to_owned(),
                };
                if root == "/" {
                    format!("{on_disk}{listed} cannot be read; build it or copy it into this store")
                } else {
                    format!(
                        "{}{listed} cannot be read at {on_disk}; is --root {root} the store's root?",
                        info.path
                    )
                }
            })?;
        }
        Ok(())
    }

    /// The file the closure was read from, for messages.
    pub fn name(&self) -> String {
        match &self.file {
            Some(f) => format!("the closure {f}"),
            None => "the closure".to_owned(),
        }
    }

    /// `hash` as the closure's file writes hashes: SRI or `sha256:<nix32>`.
    pub fn show_hash(&self, hash: &NixHash) -> String {
        if self.sri {
            hash.to_sri()
        } else {
            hash.to_string()
        }
    }

    /// Where a store path lies on disk when the store sits below `root`.
    pub fn source(&self, root: &Utf8Path, path: &StorePath) -> Utf8PathBuf {
        root.join(path.to_absolute_path().trim_start_matches('/'))
    }

    /// The closure as `nix-store --load-db` reads it, sorted.
    pub fn registration(&self) -> String {
        Registration(&self.paths).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: &str = "/nix/store/00bgd045z0d4icpbc2yyz4gx48ak44la-a";
    const B: &str = "/nix/store/1b9p07z77phvv2hf6gm9f28syp39f1ag-b";
    const H: &str = "sha256:0mdqa9w1p6cmli6976v4wi0sw9r4p5prkj7lzfd1877wk11c9c73";
    const SRI: &str = "sha256-47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=";

    fn json(refs_of_b: &str) -> String {
        format!(
            r#"{{"closure": [
              {{"path": "{B}", "narHash": "{SRI}", "narSize": 2, "closureSize": 3, "references": [{refs_of_b}]}},
              {{"path": "{A}", "narHash": "{H}", "narSize": 1, "references": []}}
            ], "outputs": {{"out": "/nix/store/x"}}}}"#
        )
    }

    #[test]
    fn json_and_registration_agree() {
        let from_json =
            Closure::new(Closure::from_json(&json(&format!("\"{A}\"")), "closure").expect("json"))
                .expect("closed");
        let text = from_json.registration();
        assert_eq!(text, format!("{A}\n{H}\n1\n\n0\n{B}\n{H}\n2\n\n1\n{A}\n"));
        let from_reg = Closure::new(registration::parse(&text).expect("parse")).expect("closed");
        assert_eq!(from_reg.paths, from_json.paths);
    }

    #[test]
    fn json_missing_attr_names_keys() {
        let e = Closure::from_json(&json(""), "nope").expect_err("no such key");
        let msg = format!("{e:#}");
        assert!(
            msg.contains("closure, outputs") && msg.contains("--closure-attr"),
            "{msg}"
        );
    }

    #[test]
    fn not_closed() {
        let c = Closure::from_json(
            &json(&format!("\"{A}\", \"{}\"", B.replace("-b", "-c"))),
            "closure",
        )
        .expect("json");
        let e = Closure::new(c).expect_err("c is missing");
        assert!(e.to_string().contains("not closed"), "{e}");
    }

    #[test]
    fn duplicate() {
        let mut c = Closure::from_json(&json(""), "closure").expect("json");
        c.push(c[0].clone());
        assert!(
            Closure::new(c)
                .expect_err("dup")
                .to_string()
                .contains("listed twice")
        );
    }

    #[test]
    fn duplicate_key() {
        let text = json("").replace(r#""narSize": 1,"#, r#""narSize": 1, "narSize": 7,"#);
        let e = Closure::from_json(&text, "closure").expect_err("two narSize");
        let msg = format!("{e:#}");
        assert!(
            msg.contains(r#"key "narSize" appears twice in one object at line 3"#),
            "{msg}"
        );
    }

    #[test]
    fn empty() {
        assert!(Closure::new(vec![]).is_err());
    }

    mod fuzz {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #![proptest_config(ProptestConfig {
                cases: 1024,
                failure_persistence: None,
                ..ProptestConfig::default()
            })]

            #[test]
            fn any_text_parses_or_fails(text in "(?s).{0,400}") {
                let _ = Closure::from_json(&text, "closure").map(Closure::new);
            }

            /// Valid structured attrs with one byte changed and cut anywhere
            /// give a closure or an error, never a panic.
            #[test]
            fn damaged_json(at in any::<prop::sample::Index>(), byte in any::<u8>(),
                            cut in any::<prop::sample::Index>()) {
                let mut bytes = json(&format!("\"{A}\"")).into_bytes();
                let i = at.index(bytes.len());
                bytes[i] = byte;
                bytes.truncate(cut.index(bytes.len()) + 1);
                let text = String::from_utf8_lossy(&bytes);
                let _ = Closure::from_json(&text, "closure").map(Closure::new);
            }
        }
    }
}
