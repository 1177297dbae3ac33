//! The layout's rule, checked on the source: folders of `gateway/src` import only from folders
//! below them (app > surface > pipeline > providers, store > accounting > wire, support), no file
//! imports from a file that imports it back, and the engine's core never imports its tooling.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level folders, highest first. Equal ranks may not import each other.
const LAYERS: [(&str, u8); 8] = [
    ("app", 6),
    ("surface", 5),
    ("pipeline", 4),
    ("providers", 3),
    ("store", 3),
    ("accounting", 2),
    ("wire", 1),
    ("support", 1),
];

fn sources(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// The file's code before its unit tests (tests may reach anywhere), without comments (a doc
/// link is not a dependency).
fn code(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let code = match text.find("#[cfg(test)]\nmod ") {
        Some(at) => &text[..at],
        None => &text,
    };
    code.lines()
        .map(|l| l.split_once("//").map_or(l, |(code, _)| code))
        .collect::<Vec<_>>()
        .join("\n")
}

/// `crate::a::b::...` paths the code names, as their module path segments.
fn crate_paths(code: &str) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    for (at, _) in code.match_indices("crate::") {
        let rest = &code[at + "crate::".len()..];
        let segments: Vec<String> = rest
            .split("::")
            .map(|s| {
                s.chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .take_while(|s| !s.is_empty() && s.chars().next().is_some_and(|c| c.is_lowercase()))
            .collect();
        if !segments.is_empty() {
            out.push(segments);
        }
    }
    out
}

fn src() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// A file's module path: `src/pipeline/routing/mod.rs` -> `pipeline::routing`.
fn module_of(path: &Path) -> Vec<String> {
    let relative = path.strip_prefix(src()).unwrap().with_extension("");
    let mut parts: Vec<String> = relative
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
        parts.pop();
    }
    parts
}

#[test]
fn top_level_folders_import_only_downwards() {
    let rank = |folder: &str| LAYERS.iter().find(|(f, _)| *f == folder).map(|(_, r)| *r);
    let mut upward = Vec::new();
    for path in sources(&src()) {
        let module = module_of(&path);
        let Some(own) = module.first().and_then(|f| rank(f)) else {
            continue;
        };
        for target in crate_paths(&code(&path)) {
            let Some(theirs) = rank(&target[0]) else {
                continue;
            };
            if target[0] != module[0] && theirs >= own {
                upward.push(format!(
                    "{} -> crate::{}",
                    path.display(),
                    target.join("::")
                ));
            }
        }
    }
    assert!(
        upward.is_empty(),
        "imports that run up or sideways:\n{}",
        upward.join("\n")
    );
}

#[test]
fn no_file_imports_a_file_that_imports_it() {
    let files: BTreeMap<Vec<String>, PathBuf> = sources(&src())
        .into_iter()
        .map(|p| (module_of(&p), p))
        .collect();
    // Each file's imports, resolved to the longest module path that is a file.
    let mut edges: BTreeMap<&Vec<String>, BTreeSet<&Vec<String>>> = BTreeMap::new();
    for (module, path) in &files {
        for target in crate_paths(&code(path)) {
            let mut target = target;
            while !target.is_empty() && !files.contains_key(&target) {
                target.pop();
            }
            if let Some((key, _)) = files.get_key_value(&target)
                && key != module
                && !key.is_empty()
            {
                edges.entry(module).or_default().insert(key);
            }
        }
    }
    // A parent module naming its child is declaration, not a dependency that can loop.
    let edges: BTreeMap<&Vec<String>, Vec<&Vec<String>>> = edges
        .into_iter()
        .map(|(a, targets)| {
            let kept = targets
                .into_iter()
                .filter(|b| !b.starts_with(a) && !a.starts_with(b))
                .collect();
            (a, kept)
        })
        .collect();
    let mut cycles = Vec::new();
    let mut done: BTreeSet<&Vec<String>> = BTreeSet::new();
    for start in edges.keys() {
        let mut path = Vec::new();
        walk(start, &edges, &mut path, &mut done, &mut cycles);
    }
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

/// Depth-first search; a module met again on the current path closes a cycle.
fn walk<'a>(
    at: &'a Vec<String>,
    edges: &BTreeMap<&'a Vec<String>, Vec<&'a Vec<String>>>,
    path: &mut Vec<&'a Vec<String>>,
    done: &mut BTreeSet<&'a Vec<String>>,
    cycles: &mut Vec<String>,
) {
    if let Some(i) = path.iter().position(|p| *p == at) {
        let names: Vec<String> = path[i..].iter().map(|m| m.join("::")).collect();
        cycles.push(names.join(" -> "));
        return;
    }
    if done.contains(at) {
        return;
    }
    path.push(at);
    for next in edges.get(at).into_iter().flatten() {
        walk(next, edges, path, done, cycles);
    }
    path.pop();
    done.insert(at);
}

#[test]
fn the_engine_core_never_imports_its_tooling() {
    let engine = Path::new(env!("CARGO_MANIFEST_DIR")).join("../engine/src");
    let mut offending = Vec::new();
    for path in sources(&engine) {
        let relative = path.strip_prefix(&engine).unwrap();
        if relative.starts_with("tooling") || relative.ends_with("kernel_emulation.rs") {
            continue;
        }
        if code(&path).contains("crate::tooling") {
            offending.push(relative.display().to_string());
        }
    }
    assert!(
        offending.is_empty(),
        "core files using tooling: {offending:?}"
    );
}
