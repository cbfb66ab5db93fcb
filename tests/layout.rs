//! The layout rules of `docs/architecture.md`, checked so they cannot
//! quietly erode:
//! - no cycle between the daemon's modules (each source file is a module;
//!   an edge is a `crate::` or `super::` path one file names in another);
//! - no source file over 800 lines outside tests;
//! - every libc call sits in `sys.rs`, behind a safe function.
//!
//! It reads the source as text (comments stripped), needs no root and no
//! kernel.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use support::Scratch;

const MAX_LINES: usize = 800;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// A path as the repository names it.
fn shown(p: &Path) -> String {
    p.strip_prefix(root()).unwrap_or(p).display().to_string()
}

/// Every `.rs` file below `dir`.
fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "rs") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}

/// The module path of a file of the library (`crate::a::b`), None for the
/// binary's `main.rs`.
fn module_of(src: &Path, file: &Path) -> Option<Vec<String>> {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let last = parts.pop()?;
    match last.as_str() {
        "main.rs" if parts.is_empty() => return None,
        "lib.rs" | "mod.rs" => {}
        other => parts.push(other.trim_end_matches(".rs").to_string()),
    }
    Some(parts)
}

/// The text without `//` comments (doc comments name paths in links),
/// with each `use` declaration on one line (blank lines keep the count).
fn code_of(text: &str) -> String {
    let lines: Vec<&str> = text
        .lines()
        .map(|l| match l.find("//") {
            // A `//` inside a string literal ("http://...") keeps the line.
            Some(i) if l[..i].matches('"').count() % 2 == 0 => &l[..i],
            _ => l,
        })
        .collect();
    let mut out = Vec::with_capacity(lines.len());
    let mut i = 0;
    while i < lines.len() {
        let t = lines[i].trim_start();
        let is_use = t.starts_with("use ") || (t.starts_with("pub") && t.contains(" use "));
        if is_use && !lines[i].contains(';') {
            let mut joined = lines[i].to_string();
            let mut j = i + 1;
            while j < lines.len() {
                joined.push(' ');
                joined.push_str(lines[j].trim());
                if lines[j].contains(';') {
                    break;
                }
                j += 1;
            }
            out.push(joined);
            out.extend(std::iter::repeat_n(
                String::new(),
                j.min(lines.len() - 1) - i,
            ));
            i = j + 1;
        } else {
            out.push(lines[i].to_string());
            i += 1;
        }
    }
    out.join("\n")
}

fn ident_at(s: &str) -> Option<&str> {
    let end = s
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(s.len());
    (end > 0).then(|| &s[..end])
}

/// Every path in `code` that starts at `crate::`, `self::` or a chain of
/// `super::`, made absolute from `module`; `{a::b, c}` groups are expanded
/// one level (enough for `use` lists).
fn paths_in(
    code: &str,
    module: &[String],
    is_module: &dyn Fn(&[String]) -> bool,
) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < code.len() {
        let Some(id) = ident_at(&code[i..]) else {
            i += code[i..].chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let start = i;
        i += id.len();
        let before = code[..start].chars().last();
        // `pub(in crate::x)` is a visibility, not a use.
        let visibility = code[..start].ends_with("(in ");
        if visibility
            || before.is_some_and(|c| c == ':' || c == '.')
            || !code[i..].starts_with("::")
        {
            continue;
        }
        let child = [module, &[id.to_string()]].concat();
        let (mut base, mut tail) = match id {
            "crate" => (Vec::new(), &code[i + 2..]),
            "self" => (module.to_vec(), &code[i + 2..]),
            "super" => (
                module[..module.len().saturating_sub(1)].to_vec(),
                &code[i + 2..],
            ),
            // A child module named without `self::` (2018 paths).
            _ if is_module(&child) => (module.to_vec(), &code[start..]),
            _ => continue,
        };
        while let Some(r) = tail.strip_prefix("super::") {
            base.pop();
            tail = r;
        }
        // `a::b::{c, d::e}`: the group's items, each after the prefix.
        let (lead, used) = segments_len(tail);
        base.extend(lead);
        match tail[used..]
            .strip_prefix("::{")
            .or_else(|| tail[used..].strip_prefix('{'))
        {
            Some(group) => {
                let body = &group[..group.find('}').unwrap_or(group.len())];
                for item in body.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                    let mut p = base.clone();
                    p.extend(segments(item));
                    out.push(p);
                }
            }
            None => out.push(base),
        }
    }
    out
}

fn segments(s: &str) -> Vec<String> {
    segments_len(s).0
}

/// The identifiers of a path at the start of `s`, and how many bytes they
/// take (a trailing `::` before something else is left unconsumed).
fn segments_len(s: &str) -> (Vec<String>, usize) {
    let mut segs = Vec::new();
    let mut used = 0;
    while let Some(id) = ident_at(&s[used..]) {
        segs.push(id.to_string());
        used += id.len();
        if s[used..].starts_with("::") && ident_at(&s[used + 2..]).is_some() {
            used += 2;
        } else {
            break;
        }
    }
    (segs, used)
}

/// Names a file declares (items, and modules declared inline or as files).
fn declared(code: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for line in code.lines() {
        let mut t = line.trim_start();
        for prefix in [
            "pub(crate) ",
            "pub(super) ",
            "pub ",
            "async ",
            "unsafe ",
            "const fn ",
        ] {
            t = t.strip_prefix(prefix).unwrap_or(t);
        }
        let t = t.strip_prefix("const fn ").unwrap_or(t);
        for kw in [
            "struct ", "enum ", "fn ", "const ", "static ", "trait ", "type ", "union ", "mod ",
        ] {
            if let Some(id) = t.strip_prefix(kw).and_then(ident_at) {
                names.insert(id.to_string());
            }
        }
    }
    names
}

/// What a module re-exports with `pub use`: names to the paths they stand
/// for, and the modules it re-exports whole (`pub use x::*`).
#[derive(Default)]
struct Facade {
    names: BTreeMap<String, Vec<String>>,
    globs: Vec<Vec<String>>,
}

fn is_reexport(line: &str) -> bool {
    let t = line.trim_start();
    ["pub use ", "pub(crate) use ", "pub(super) use "]
        .iter()
        .any(|p| t.starts_with(p))
}

/// The module graph of the library under `src`: module -> modules it
/// uses, with one place each edge is made. A path is followed through
/// re-exports to the module that defines the item, so a facade (`pub use`
/// in a `mod.rs`) is not itself a dependency.
fn graph(src: &Path) -> BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>> {
    let files: Vec<(PathBuf, Vec<String>, String)> = sources(src)
        .into_iter()
        .filter_map(|f| {
            let m = module_of(src, &f)?;
            let code = code_of(&std::fs::read_to_string(&f).unwrap());
            Some((f, m, code))
        })
        .collect();
    let modules: BTreeSet<Vec<String>> = files.iter().map(|(_, m, _)| m.clone()).collect();
    let is_module = |m: &[String]| modules.contains(m);
    let mut defined: BTreeMap<Vec<String>, BTreeSet<String>> = BTreeMap::new();
    let mut facades: BTreeMap<Vec<String>, Facade> = BTreeMap::new();
    for (_, module, code) in &files {
        defined.insert(module.clone(), declared(code));
        let facade = facades.entry(module.clone()).or_default();
        for line in code.lines().filter(|l| is_reexport(l)) {
            let glob = line.contains("::*");
            for p in paths_in(line, module, &is_module) {
                if glob {
                    facade.globs.push(p);
                } else if let Some(name) = p.last() {
                    facade.names.insert(name.clone(), p.clone());
                }
            }
        }
    }
    // The longest known module a path starts with.
    let prefix = |path: &[String]| -> Vec<String> {
        (0..=path.len())
            .rev()
            .map(|n| path[..n].to_vec())
            .find(|p| modules.contains(p))
            .unwrap_or_default()
    };
    // The module that defines what `path` names.
    fn resolve(
        path: &[String],
        depth: u32,
        prefix: &dyn Fn(&[String]) -> Vec<String>,
        defined: &BTreeMap<Vec<String>, BTreeSet<String>>,
        facades: &BTreeMap<Vec<String>, Facade>,
    ) -> Vec<String> {
        let m = prefix(path);
        let rest = &path[m.len()..];
        let Some(name) = rest.first() else {
            return m;
        };
        if depth > 8 || defined.get(&m).is_some_and(|d| d.contains(name)) {
            return m;
        }
        let facade = &facades[&m];
        if let Some(target) = facade.names.get(name) {
            let mut p = target.clone();
            p.extend_from_slice(&rest[1..]);
            return resolve(&p, depth + 1, prefix, defined, facades);
        }
        for g in &facade.globs {
            let mut p = g.clone();
            p.extend_from_slice(rest);
            let r = resolve(&p, depth + 1, prefix, defined, facades);
            if r != prefix(g) || defined.get(&r).is_some_and(|d| d.contains(name)) {
                return r;
            }
        }
        m
    }
    let mut g: BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>> = BTreeMap::new();
    for (file, module, code) in &files {
        g.entry(module.clone()).or_default();
        // Inline modules (`mod tests { ... }`) are modules of their own:
        // (name, brace depth at which they close).
        let mut inline: Vec<(String, i64)> = Vec::new();
        let mut depth = 0i64;
        for (n, line) in code.lines().enumerate() {
            let trimmed = line.trim_start();
            let decl = trimmed
                .strip_prefix("pub(crate) ")
                .or_else(|| trimmed.strip_prefix("pub "))
                .unwrap_or(trimmed)
                .strip_prefix("mod ")
                .and_then(|r| ident_at(r).filter(|id| r[id.len()..].trim_start().starts_with('{')));
            if let Some(id) = decl {
                inline.push((id.to_string(), depth));
            }
            let mut here = module.clone();
            here.extend(inline.iter().map(|(m, _)| m.clone()));
            if !is_reexport(line) {
                for t in paths_in(line, &here, &is_module) {
                    let m = resolve(&t, 0, &prefix, &defined, &facades);
                    if m != here && !m.is_empty() {
                        g.entry(here.clone())
                            .or_default()
                            .entry(m)
                            .or_insert_with(|| {
                                format!("{}:{}", file.strip_prefix(src).unwrap().display(), n + 1)
                            });
                    }
                }
            }
            depth += line.matches('{').count() as i64 - line.matches('}').count() as i64;
            while inline.last().is_some_and(|(_, d)| depth <= *d) {
                inline.pop();
            }
        }
    }
    g
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>>) -> Vec<Vec<Vec<String>>> {
    struct T<'a> {
        g: &'a BTreeMap<Vec<String>, BTreeMap<Vec<String>, String>>,
        index: BTreeMap<&'a Vec<String>, usize>,
        low: BTreeMap<&'a Vec<String>, usize>,
        stack: Vec<&'a Vec<String>>,
        on: BTreeSet<&'a Vec<String>>,
        out: Vec<Vec<Vec<String>>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a Vec<String>) {
        let i = t.index.len();
        t.index.insert(v, i);
        t.low.insert(v, i);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g[v].keys() {
            let Some((w, _)) = t.g.get_key_value(w) else {
                continue;
            };
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            while let Some(w) = t.stack.pop() {
                t.on.remove(w);
                comp.push(w.clone());
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

fn name(m: &[String]) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

#[test]
fn the_daemons_modules_form_no_cycle() {
    let src = root().join("daemon/src");
    let g = graph(&src);
    assert!(
        g.len() > 40,
        "the module graph was read ({} modules)",
        g.len()
    );
    let found = cycles(&g);
    let report: Vec<String> = found
        .iter()
        .map(|comp| {
            let members: BTreeSet<&Vec<String>> = comp.iter().collect();
            let edges: Vec<String> = comp
                .iter()
                .flat_map(|m| {
                    g[m].iter()
                        .filter(|(t, _)| members.contains(t))
                        .map(move |(t, at)| format!("  {} -> {} ({at})", name(m), name(t)))
                })
                .collect();
            format!("cycle:\n{}", edges.join("\n"))
        })
        .collect();
    assert!(report.is_empty(), "{}", report.join("\n"));
}

/// Writes a made-up crate, returns its cycles as module names.
fn cycles_of(files: &[(&str, &str)]) -> Vec<BTreeSet<String>> {
    let dir = Scratch::new("layout");
    for (path, text) in files {
        let f = dir.join(path);
        std::fs::create_dir_all(f.parent().unwrap()).unwrap();
        std::fs::write(f, text).unwrap();
    }
    let g = graph(&dir);
    cycles(&g)
        .iter()
        .map(|c| c.iter().map(|m| name(m)).collect())
        .collect()
}

#[test]
fn the_cycle_check_finds_a_cycle_when_there_is_one() {
    // a -> b::c -> a, through a `super::super` group and a multi-line use.
    let found = cycles_of(&[
        ("lib.rs", "mod a; mod b;\n"),
        (
            "a.rs",
            "use crate::b::c::Thing; // crate::d\npub fn f() {}\n",
        ),
        ("b/mod.rs", "pub mod c;\n"),
        (
            "b/c.rs",
            "use super::super::{\n    a::f,\n    b,\n};\npub struct Thing;\n",
        ),
    ]);
    assert_eq!(
        found,
        [BTreeSet::from(["a".to_string(), "b::c".to_string()])]
    );
    // A facade whose child uses an item the facade itself defines: a cycle.
    let found = cycles_of(&[
        ("lib.rs", "mod p;\n"),
        (
            "p/mod.rs",
            "mod c;\npub use c::Child;\npub struct Own;\nfn g() { c::helper(); }\n",
        ),
        (
            "p/c.rs",
            "pub struct Child(crate::p::Own);\npub fn helper() {}\n",
        ),
    ]);
    assert_eq!(
        found,
        [BTreeSet::from(["p".to_string(), "p::c".to_string()])]
    );
}

#[test]
fn a_facade_that_only_reexports_is_no_cycle() {
    // Siblings reached through the parent's `pub use`: edges go to the
    // module that defines the item, so this is no cycle.
    let found = cycles_of(&[
        ("lib.rs", "mod p;\n"),
        ("p/mod.rs", "mod a;\nmod b;\npub use a::A;\npub use b::*;\n"),
        ("p/a.rs", "pub struct A(crate::p::B);\n"),
        ("p/b.rs", "pub struct B;\n"),
        ("p/user.rs", "use super::{A, B};\n"),
    ]);
    assert!(found.is_empty(), "{found:?}");
}

#[test]
fn no_source_file_is_over_800_lines_outside_tests() {
    let mut long = Vec::new();
    for dir in ["daemon/src", "common/src", "ebpf/src"] {
        for f in sources(&root().join(dir)) {
            if f.file_name().is_some_and(|n| n == "tests.rs")
                || f.components().any(|c| c.as_os_str() == "tests")
            {
                continue;
            }
            let n = std::fs::read_to_string(&f).unwrap().lines().count();
            if n > MAX_LINES {
                long.push(format!("{} ({n} lines)", shown(&f)));
            }
        }
    }
    assert!(
        long.is_empty(),
        "split these by concern: {}",
        long.join(", ")
    );
}

#[test]
fn every_libc_call_is_in_sys_rs() {
    let src = root().join("daemon/src");
    let mut calls = Vec::new();
    for f in sources(&src) {
        if f.ends_with("sys.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&f).unwrap();
        for (n, line) in code_of(&text).lines().enumerate() {
            for (i, _) in line.match_indices("libc::") {
                let rest = &line[i + 6..];
                // A function call: a lower-case name followed by `(`.
                if let Some(id) = ident_at(rest)
                    && id.starts_with(|c: char| c.is_ascii_lowercase())
                    && rest[id.len()..].starts_with('(')
                {
                    calls.push(format!("{}:{}: libc::{id}", shown(&f), n + 1));
                }
            }
        }
    }
    assert!(
        calls.is_empty(),
        "call these through a safe function in daemon/src/sys.rs:\n{}",
        calls.join("\n")
    );
}
