//! The library's layering: the top-level modules of `src/` (everything but `lib.rs` and `bin/`)
//! import each other without a cycle, so each can be read, tested and changed knowing only the
//! ones below it. An arrow is any `crate::<module>` path in production code; comments, string
//! literals and `#[cfg(test)]` items (unit tests may build a whole daemon) do not count.
//!
//! No production function is longer than [`MAX_FN_LINES`] lines either.
//!
//! `cargo test --test architecture -- --nocapture` prints the graph, lowest layer first; with
//! `KIRQ_ARCH_SRC=<dir>` it reads another tree's `src/` instead (e.g. an older commit's, from
//! `git archive <commit> src | tar -x -C <dir>/..`), to compare.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module → the top-level modules its production code names.
type Graph = BTreeMap<String, BTreeSet<String>>;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).expect("src/ is readable") {
        let p = e.expect("entry").path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The code of a Rust file with comments and string/char literals blanked out.
fn code_only(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let next = b.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < b.len() && b[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < b.len() {
                if b[i] == '/' && b.get(i + 1) == Some(&'*') {
                    depth += 1;
                    i += 2;
                } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    i += 1;
                }
            }
            out.push(' ');
        } else if c == 'r' && matches!(next, Some('"') | Some('#')) && !ident_before(&b, i) {
            // A raw string: r"...", r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while b.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if b.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            j += 1;
            'raw: while j < b.len() {
                if b[j] == '"' && (1..=hashes).all(|k| b.get(j + k) == Some(&'#')) {
                    j += 1 + hashes;
                    break 'raw;
                }
                j += 1;
            }
            i = j;
            out.push_str("\"\"");
        } else if c == '"' {
            i += 1;
            while i < b.len() && b[i] != '"' {
                i += if b[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
            out.push_str("\"\"");
        } else if c == '\'' {
            // A char literal ('x', '\n', '\''), or a lifetime ('a), which is kept.
            if next == Some('\\') {
                i += 2;
                while i < b.len() && b[i] != '\'' {
                    i += 1;
                }
                i += 1;
                out.push_str("' '");
            } else if b.get(i + 2) == Some(&'\'') {
                i += 3;
                out.push_str("' '");
            } else {
                out.push(c);
                i += 1;
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn ident_before(b: &[char], i: usize) -> bool {
    i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_')
}

/// `code` without the items marked `#[cfg(test)]` (a `mod x;`, or an item up to its matching
/// closing brace).
fn without_test_items(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = rest.find("#[cfg(test)]") {
        out.push_str(&rest[..at]);
        let item = &rest[at..];
        let semi = item.find(';');
        let brace = item.find('{');
        let end = match (semi, brace) {
            (Some(s), Some(b)) if s < b => s + 1,
            (_, Some(b)) => {
                let mut depth = 0;
                let mut end = item.len();
                for (k, ch) in item[b..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = b + k + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            (Some(s), None) => s + 1,
            (None, None) => item.len(),
        };
        rest = &item[end..];
    }
    out.push_str(rest);
    out
}

/// Files that are `#[cfg(test)] mod x;` of their parent: `tests.rs` by this project's custom.
fn is_test_file(rel: &Path) -> bool {
    rel.file_name().is_some_and(|n| n == "tests.rs")
}

fn graph(src: &Path) -> Graph {
    let mut files = Vec::new();
    rust_files(src, &mut files);
    let top = |rel: &Path| -> Option<String> {
        let first = rel.components().next()?.as_os_str().to_str()?.to_owned();
        match first.as_str() {
            "bin" | "lib.rs" => None,
            f => Some(f.trim_end_matches(".rs").to_owned()),
        }
    };
    let modules: BTreeSet<String> = files
        .iter()
        .filter_map(|p| top(p.strip_prefix(src).ok()?))
        .collect();
    let mut g: Graph = modules
        .iter()
        .map(|m| (m.clone(), BTreeSet::new()))
        .collect();
    for p in &files {
        let rel = p.strip_prefix(src).expect("under src");
        let Some(from) = top(rel) else { continue };
        if is_test_file(rel) {
            continue;
        }
        let text = std::fs::read_to_string(p).expect("source file");
        let code = without_test_items(&code_only(&text));
        for to in referenced(&code, &modules) {
            if to != from {
                g.get_mut(&from).expect("known").insert(to);
            }
        }
    }
    g
}

/// Top-level modules named as `crate::m` (also inside `use crate::{m, ...}` groups).
fn referenced(code: &str, modules: &BTreeSet<String>) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        let names: Vec<&str> = if let Some(group) = rest.strip_prefix('{') {
            let end = matching_brace(group);
            split_top_level(&group[..end])
        } else {
            vec![rest]
        };
        for n in names {
            let n = n.trim_start();
            let ident: String = n
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if modules.contains(&ident) {
                out.insert(ident);
            }
        }
    }
    out
}

fn matching_brace(s: &str) -> usize {
    let mut depth = 1;
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    return i;
                }
            }
            _ => {}
        }
    }
    s.len()
}

/// The comma-separated entries of a `use` group, nested groups kept whole.
fn split_top_level(s: &str) -> Vec<&str> {
    let (mut out, mut depth, mut start) = (Vec::new(), 0, 0);
    for (i, c) in s.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                out.push(&s[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    out.push(&s[start..]);
    out
}

/// The modules in dependency order (each after everything it imports), or the modules left
/// on cycles.
fn layers(g: &Graph) -> Result<Vec<Vec<String>>, BTreeSet<String>> {
    let mut placed: BTreeSet<String> = BTreeSet::new();
    let mut out = Vec::new();
    while placed.len() < g.len() {
        let layer: Vec<String> = g
            .iter()
            .filter(|(m, deps)| !placed.contains(*m) && deps.iter().all(|d| placed.contains(d)))
            .map(|(m, _)| m.clone())
            .collect();
        if layer.is_empty() {
            return Err(g.keys().filter(|m| !placed.contains(*m)).cloned().collect());
        }
        placed.extend(layer.iter().cloned());
        out.push(layer);
    }
    Ok(out)
}

/// The import cycles: sets of two or more modules that each reach all the others.
fn cycles(g: &Graph) -> Vec<BTreeSet<String>> {
    let reach = |from: &String| -> BTreeSet<String> {
        let mut seen = BTreeSet::new();
        let mut todo: Vec<&String> = g[from].iter().collect();
        while let Some(m) = todo.pop() {
            if seen.insert(m.clone()) {
                todo.extend(g[m].iter());
            }
        }
        seen
    };
    let reaches: BTreeMap<&String, BTreeSet<String>> = g.keys().map(|m| (m, reach(m))).collect();
    let mut out: Vec<BTreeSet<String>> = Vec::new();
    for m in g.keys() {
        let cycle: BTreeSet<String> = reaches[m]
            .iter()
            .filter(|o| reaches[*o].contains(m))
            .cloned()
            .collect();
        if cycle.len() > 1 && !out.contains(&cycle) {
            out.push(cycle);
        }
    }
    out
}

fn src_dir() -> PathBuf {
    match std::env::var_os("KIRQ_ARCH_SRC") {
        Some(d) => PathBuf::from(d),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
    }
}

/// The longest a production function may be, signature to closing brace.
const MAX_FN_LINES: usize = 100;

/// `(name, first line, lines)` of every function with a body in `code`.
fn functions(code: &str) -> Vec<(String, usize, usize)> {
    let mut out = Vec::new();
    let bytes = code.as_bytes();
    let mut from = 0;
    while let Some(at) = code[from..].find("fn ") {
        let start = from + at;
        from = start + 3;
        if start > 0 && (bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'_') {
            continue;
        }
        let name: String = code[from..]
            .chars()
            .take_while(|c| c.is_alphanumeric() || *c == '_')
            .collect();
        if name.is_empty() {
            continue;
        }
        // The body is the first `{` before any `;` (a declaration without a body has none).
        let rest = &code[from..];
        let (Some(brace), semi) = (rest.find('{'), rest.find(';')) else {
            continue;
        };
        if semi.is_some_and(|s| s < brace) {
            continue;
        }
        let body = &rest[brace + 1..];
        let end = brace + 1 + matching_brace(body);
        let first = code[..start].matches('\n').count() + 1;
        let lines = code[start..from + end].matches('\n').count() + 1;
        out.push((name, first, lines));
    }
    out
}

#[test]
fn no_production_function_is_longer_than_the_limit() {
    let src = src_dir();
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut long = Vec::new();
    for p in files {
        let rel = p.strip_prefix(&src).expect("under src").to_owned();
        if is_test_file(&rel) {
            continue;
        }
        let text = std::fs::read_to_string(&p).expect("source file");
        let code = without_test_items(&code_only(&text));
        for (name, line, n) in functions(&code) {
            if n > MAX_FN_LINES {
                long.push(format!("{n:>4} lines  src/{}:{line} {name}", rel.display()));
            }
        }
    }
    long.sort();
    long.reverse();
    assert!(
        long.is_empty(),
        "production functions over {MAX_FN_LINES} lines (split them into named steps):\n{}",
        long.join("\n")
    );
}

#[test]
fn top_level_modules_import_each_other_without_a_cycle() {
    let g = graph(&src_dir());
    assert!(g.len() >= 20, "found only {} modules in src/", g.len());
    for (m, deps) in &g {
        let deps: Vec<&str> = deps.iter().map(String::as_str).collect();
        println!("{m:>10} -> {}", deps.join(" "));
    }
    match layers(&g) {
        Ok(layers) => {
            println!("\nlayers, lowest first:");
            for (i, l) in layers.iter().enumerate() {
                println!("  {i}: {}", l.join(" "));
            }
        }
        Err(_) => {
            let mut report = String::new();
            for c in cycles(&g) {
                report.push_str(&format!("\ncycle {c:?}:"));
                for m in &c {
                    for d in g[m].iter().filter(|d| c.contains(*d)) {
                        report.push_str(&format!("\n  {m} -> {d}"));
                    }
                }
            }
            panic!("top-level modules import each other in a cycle:{report}");
        }
    }
}

/// The checker itself: a cycle is found, and comments, strings and test code are not arrows.
#[test]
fn the_checker_sees_cycles_and_ignores_comments_strings_and_tests() {
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path();
    std::fs::create_dir_all(src.join("b")).unwrap();
    std::fs::write(src.join("lib.rs"), "pub mod a; pub mod b; pub mod c;").unwrap();
    std::fs::write(
        src.join("a.rs"),
        "use crate::{b::X, c};\n// crate::c is a comment\nfn f() { let _ = \"crate::b\"; }",
    )
    .unwrap();
    std::fs::write(
        src.join("b/mod.rs"),
        "/// [`crate::a`]\npub struct X;\n#[cfg(test)]\nmod tests { use crate::a; }",
    )
    .unwrap();
    std::fs::write(src.join("b/tests.rs"), "use crate::a;").unwrap();
    std::fs::write(
        src.join("c.rs"),
        "fn g(x: &'static str) -> char { let _ = x; '\"' }",
    )
    .unwrap();
    let g = graph(src);
    assert_eq!(g["a"], BTreeSet::from(["b".to_owned(), "c".to_owned()]));
    assert!(g["b"].is_empty(), "{:?}", g["b"]);
    assert!(g["c"].is_empty());
    assert!(layers(&g).is_ok());
    std::fs::write(src.join("c.rs"), "pub fn g() { crate::a::f() }").unwrap();
    let g = graph(src);
    assert!(layers(&g).is_err());
    let f =
        functions("fn a() {\n    if x { y() }\n}\nfn b();\npub fn c<T: Fn() -> u8>(t: T) { }\n");
    assert_eq!(
        f,
        vec![("a".to_owned(), 1, 3), ("c".to_owned(), 5, 1)],
        "names, first lines and lengths of functions with bodies"
    );
    assert_eq!(
        cycles(&g),
        vec![BTreeSet::from(["a".to_owned(), "c".to_owned()])]
    );
}
