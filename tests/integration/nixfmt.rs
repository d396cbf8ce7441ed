//! The rules of the standard Nix format (RFC 166, as nixfmt ≥ 1.0 writes it;
//! nixpkgs' `pkgs.nixfmt`) that can be checked without nixfmt, over every
//! tracked .nix file: nixfmt itself cannot be installed here, and the
//! flake's `checks.nixfmt` runs it where nixpkgs can be fetched.
//!
//! Checked: a list with more than one element, or an attribute set with
//! more than one binding, is never on one line; a multi-line list that is
//! the first operand of `++` ends on its own line (`]`), the operator starts
//! the next one, and the list opens on the binding's line (`x = [`);
//! brackets and braces have a space inside (`[ ]`, `{ }` when empty); no
//! tabs, no trailing blanks, one final newline. Not checked: line width,
//! function application, `if` and `inherit` layout.

use std::process::Command;

use camino::Utf8PathBuf;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// An identifier, number, path, string or `or`-less term start.
    Atom,
    /// `or` (a selection's default).
    Or,
    Open(u8),
    Close(u8),
    /// `.` of a selection.
    Dot,
    Semi,
    Comma,
    /// `=` of a binding.
    Equals,
    /// Any other operator or punctuation (`++`, `//`, `:`, …).
    Op,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    line: usize,
    /// Byte offsets in the source.
    start: usize,
    end: usize,
    text: String,
}

/// The tokens of `src`, strings and comments each one token (or none),
/// interpolations included in their string.
fn tokens(src: &str) -> Result<Vec<Token>, String> {
    let b = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    let line_at = |i: usize| src[..i].matches('\n').count() + 1;
    while i < b.len() {
        let c = b[i];
        let start = i;
        let kind = match c {
            b' ' | b'\t' | b'\n' | b'\r' => {
                i += 1;
                continue;
            }
            b'#' => {
                while i < b.len() && b[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'/' if b.get(i + 1) == Some(&b'*') => {
                let end = src[i + 2..]
                    .find("*/")
                    .ok_or_else(|| format!("line {}: unterminated comment", line_at(i)))?;
                i += end + 4;
                continue;
            }
            b'"' => {
                i = skip_string(b, i + 1, false)
                    .map_err(|e| format!("line {}: {e}", line_at(start)))?;
                Kind::Atom
            }
            b'\'' if b.get(i + 1) == Some(&b'\'') => {
                i = skip_string(b, i + 2, true)
                    .map_err(|e| format!("line {}: {e}", line_at(start)))?;
                Kind::Atom
            }
            b'$' if b.get(i + 1) == Some(&b'{') => {
                // `${x}` as an attribute name: an interpolation, one atom.
                i = skip_interpolation(b, i)
                    .map_err(|e| format!("line {}: {e}", line_at(start)))?;
                Kind::Atom
            }
            b'[' | b'{' | b'(' => {
                i += 1;
                Kind::Open(c)
            }
            b']' | b'}' | b')' => {
                i += 1;
                Kind::Close(c)
            }
            b';' => {
                i += 1;
                Kind::Semi
            }
            b',' => {
                i += 1;
                Kind::Comma
            }
            b'.' if !b.get(i + 1).is_some_and(|n| *n == b'/' || *n == b'.') => {
                i += 1;
                Kind::Dot
            }
            b'=' if b.get(i + 1) != Some(&b'=') => {
                i += 1;
                Kind::Equals
            }
            b'<' if src[i..].starts_with("<nixpkgs") => {
                i += src[i..].find('>').map_or(1, |e| e + 1);
                Kind::Atom
            }
            c if c.is_ascii_alphanumeric() || c == b'_' || c == b'.' || c == b'/' || c == b'~' => {
                // Identifiers (with - and '), numbers, paths (./x, ../x, /x).
                let path = c == b'.' || c == b'/' || c == b'~';
                if path && c == b'/' && !b.get(i + 1).is_some_and(|n| n.is_ascii_alphanumeric()) {
                    i += if b.get(i + 1) == Some(&b'/') { 2 } else { 1 };
                    Kind::Op
                } else {
                    while i < b.len()
                        && (b[i].is_ascii_alphanumeric()
                            || matches!(b[i], b'_' | b'-' | b'\'' | b'.' | b'/' | b'+'))
                    {
                        // `a.b` is a selection, not one name; a path keeps its dots.
                        if !path && b[i] == b'.' {
                            break;
                        }
                        // `x++y` and `a+b`: operators, not part of a name.
                        if !path && b[i] == b'+' {
                            break;
                        }
                        i += 1;
                    }
                    if &src[start..i] == "or" {
                        Kind::Or
                    } else {
                        Kind::Atom
                    }
                }
            }
            _ => {
                // Operators: one or two characters.
                let two = src.get(i..i + 2).unwrap_or("");
                i += if ["++", "//", "==", "!=", "&&", "||", "->", "<=", ">="].contains(&two) {
                    2
                } else {
                    1
                };
                Kind::Op
            }
        };
        out.push(Token {
            kind,
            line: line_at(start),
            start,
            end: i,
            text: src[start..i].to_owned(),
        });
    }
    Ok(out)
}

/// The offset after a string whose body starts at `i` ("…" or ''…''),
/// interpolations and their nested strings included.
fn skip_string(b: &[u8], mut i: usize, indented: bool) -> Result<usize, String> {
    while i < b.len() {
        match b[i] {
            b'\\' if !indented => i += 2,
            b'\'' if indented && b.get(i + 1) == Some(&b'\'') => {
                // '' ends it, unless escaped: ''$ ''' ''\x.
                match b.get(i + 2) {
                    Some(b'$') | Some(b'\'') => i += 3,
                    Some(b'\\') => i += 4,
                    _ => return Ok(i + 2),
                }
            }
            b'"' if !indented => return Ok(i + 1),
            b'$' if b.get(i + 1) == Some(&b'{') => i = skip_interpolation(b, i)?,
            _ => i += 1,
        }
    }
    Err("unterminated string".into())
}

/// The offset after the `${…}` that starts at `i`.
fn skip_interpolation(b: &[u8], mut i: usize) -> Result<usize, String> {
    let mut depth = 1;
    i += 2;
    while depth > 0 {
        match b.get(i) {
            None => return Err("unterminated interpolation".into()),
            Some(b'{') => depth += 1,
            Some(b'}') => depth -= 1,
            Some(b'"') => {
                i = skip_string(b, i + 1, false)?;
                continue;
            }
            Some(b'\'') if b.get(i + 1) == Some(&b'\'') => {
                i = skip_string(b, i + 2, true)?;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    Ok(i)
}

fn closing(open: u8) -> u8 {
    match open {
        b'[' => b']',
        b'{' => b'}',
        _ => b')',
    }
}

/// The index of the token that closes the one at `open`.
fn matching(t: &[Token], open: usize) -> Option<usize> {
    let mut depth = 0;
    for (j, tok) in t.iter().enumerate().skip(open) {
        match tok.kind {
            Kind::Open(_) => depth += 1,
            Kind::Close(_) => {
                depth -= 1;
                if depth == 0 {
                    return Some(j);
                }
            }
            _ => {}
        }
    }
    None
}

/// Each violation of the checked rules in `src`: "line N: what".
fn violations(src: &str) -> Vec<String> {
    let mut v = Vec::new();
    for (n, line) in src.lines().enumerate() {
        if line.contains('\t') {
            v.push(format!("line {}: a tab", n + 1));
        }
        if line.ends_with(' ') {
            v.push(format!("line {}: trailing blanks", n + 1));
        }
    }
    if !src.ends_with('\n') || src.ends_with("\n\n") {
        v.push("the end: one final newline".into());
    }
    let t = match tokens(src) {
        Ok(t) => t,
        Err(e) => {
            v.push(e);
            return v;
        }
    };
    let b = src.as_bytes();
    for (i, tok) in t.iter().enumerate() {
        let Kind::Open(open) = tok.kind else { continue };
        let Some(j) = matching(&t, i) else {
            v.push(format!(
                "line {}: `{}` is never closed",
                tok.line, open as char
            ));
            continue;
        };
        if t[j].kind != Kind::Close(closing(open)) {
            v.push(format!(
                "line {}: `{}` closed by `{}`",
                tok.line, open as char, t[j].text
            ));
            continue;
        }
        if open != b'(' {
            // A space inside: `[ x ]`, `{ }`.
            let inner_ok = |k: usize| matches!(b.get(k), Some(b' ' | b'\n'));
            if !inner_ok(tok.end) || !inner_ok(t[j].start.wrapping_sub(1)) {
                v.push(format!(
                    "line {}: `{}` and `{}` need a space inside",
                    tok.line,
                    open as char,
                    closing(open) as char
                ));
            }
        }
        let inner = &t[i + 1..j];
        let top = |k: &Kind| {
            let mut depth = 0;
            inner
                .iter()
                .filter(|x| {
                    let at_top = depth == 0;
                    match x.kind {
                        Kind::Open(_) => depth += 1,
                        Kind::Close(_) => depth -= 1,
                        _ => {}
                    }
                    at_top && x.kind == *k
                })
                .count()
        };
        let one_line = tok.line == t[j].line;
        if open == b'[' {
            // Elements: terms at the top, a selection's `.x` and an `or`
            // default belonging to the term before them.
            let mut depth = 0;
            let mut elements = 0;
            let mut prev: Option<Kind> = None;
            for x in inner {
                if depth == 0 {
                    let starts = matches!(x.kind, Kind::Atom | Kind::Open(_))
                        && !matches!(prev, Some(Kind::Dot | Kind::Or));
                    if starts {
                        elements += 1;
                    }
                    prev = Some(x.kind);
                }
                match x.kind {
                    Kind::Open(_) => depth += 1,
                    Kind::Close(_) => depth -= 1,
                    _ => {}
                }
            }
            if one_line && elements > 1 {
                v.push(format!(
                    "line {}: a list of {elements} elements on one line",
                    tok.line
                ));
            }
            if !one_line {
                let next = t.get(j + 1);
                if next.is_some_and(|n| n.text == "++" && n.line == t[j].line) {
                    v.push(format!(
                        "line {}: `++` after a multi-line list starts its own line",
                        t[j].line
                    ));
                }
                let before = i.checked_sub(1).map(|k| &t[k]);
                if before.is_some_and(|p| p.kind == Kind::Equals && p.line < tok.line)
                    && next.is_some_and(|n| n.text == "++")
                {
                    v.push(format!(
                        "line {}: a multi-line list before `++` opens on the binding's line",
                        tok.line
                    ));
                }
            }
        }
        if open == b'{' && one_line && top(&Kind::Semi) > 1 {
            v.push(format!(
                "line {}: an attribute set of {} bindings on one line",
                tok.line,
                top(&Kind::Semi)
            ));
        }
    }
    v
}

#[test]
fn nixfmt_rules_catch_what_they_say() {
    let bad = [
        ("x = [ a b ];\n", "a list of 2 elements on one line"),
        ("x = [ a.b or c d ];\n", "a list of 2 elements on one line"),
        (
            "x = { a = 1; b = 2; };\n",
            "an attribute set of 2 bindings on one line",
        ),
        (
            "x = [\n  a\n  b\n] ++ c;\n",
            "`++` after a multi-line list starts its own line",
        ),
        (
            "x =\n  [\n    a\n    b\n  ]\n  ++ c;\n",
            "a multi-line list before `++` opens on the binding's line",
        ),
        ("x = [];\n", "need a space inside"),
        ("x = {a = 1;};\n", "need a space inside"),
        ("x = 1;\t\n", "a tab"),
        ("x = 1; \n", "trailing blanks"),
        ("x = 1;", "one final newline"),
        ("x = \"${y\";\n", "unterminated"),
    ];
    for (src, said) in bad {
        let v = violations(src);
        assert!(v.iter().any(|e| e.contains(said)), "{src:?}: {v:?}");
    }
    // What nixfmt writes passes.
    let good = r#"{ lib, ... }:
let
  single = [ "a" ];
  sel = [ a.b.c ];
  dflt = [ (a.b or c) ];
  s = "[ a b ] { a = 1; b = 2; } ${lib.concatStringsSep " " [ "x" ]}";
  i = ''
    [ a b ] ''${x} '''
  '';
  p = [ ./a/b.nix ];
  f = { inherit a; };
in
{
  x = [
    "a"
    "b"
  ]
  ++ lib.optional true "c";
  y = [ ] ++ [ { } ];
  # a comment with [ a b ]
  z = 1 // { a = 2; };
}
"#;
    assert_eq!(violations(good), Vec::<String>::new());
}

#[test]
#[ignore = "needs git and the checkout: the tracked files (scripts/test.sh runs it)"]
fn nixfmt_rules_hold_in_every_tracked_nix_file() {
    let root = Utf8PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("git")
        .args(["ls-files", "-z", "*.nix"])
        .current_dir(&root)
        .output()
        .expect("git ls-files");
    assert!(out.status.success(), "git ls-files failed");
    let files: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .split('\0')
        .filter(|f| !f.is_empty())
        .map(String::from)
        .collect();
    assert!(files.len() > 10, "too few .nix files: {files:?}");
    let mut all = Vec::new();
    for f in &files {
        let src = std::fs::read_to_string(root.join(f)).expect("read");
        all.extend(violations(&src).into_iter().map(|e| format!("{f}: {e}")));
    }
    assert!(
        all.is_empty(),
        "not as nixfmt writes it (RFC 166):\n{}",
        all.join("\n")
    );
}
