//! The crate's layout, checked: the top-level modules of `src/` form no
//! import circle (issue 9). A `crate::X` path inside module `M` is an edge
//! M → X; only `lib.rs` and `main.rs`, which know every subcommand, are
//! left out. A circle found here is printed as `a -> b -> a`.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::{Path, PathBuf};

/// Every `.rs` file under `dir`, recursively.
fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).expect("read src directory") {
        let path = entry.expect("directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The names `text` reaches through `crate::NAME`.
fn crate_paths(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        let name: String = after
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        // `$crate::` in a macro and `super::crate` never occur; a word
        // ending in "crate" (e.g. `mycrate::`) is not a crate path.
        let before = rest[..at].chars().next_back();
        if !before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$') {
            names.insert(name);
        }
        rest = after;
    }
    names
}

/// Module → the other top-level modules it imports.
fn graph(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let mut modules = BTreeSet::new();
    for entry in fs::read_dir(src).expect("read src") {
        let path = entry.expect("entry").path();
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        if stem != "lib"
            && stem != "main"
            && (path.is_dir() || path.extension().is_some_and(|e| e == "rs"))
        {
            modules.insert(stem);
        }
    }
    let mut edges = BTreeMap::new();
    for m in &modules {
        let mut files = Vec::new();
        let file = src.join(format!("{m}.rs"));
        if file.exists() {
            files.push(file);
        }
        if src.join(m).is_dir() {
            rust_files(&src.join(m), &mut files);
        }
        let mut deps = BTreeSet::new();
        for f in files {
            let text = fs::read_to_string(&f).expect("read source file");
            deps.extend(
                crate_paths(&text)
                    .into_iter()
                    .filter(|d| d != m && modules.contains(d)),
            );
        }
        edges.insert(m.clone(), deps);
    }
    edges
}

/// The first circle found by a depth-first walk, as a path that ends where
/// it starts.
fn circle(edges: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn walk(
        node: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        stack: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(at) = stack.iter().position(|n| n == node) {
            let mut found = stack[at..].to_vec();
            found.push(node.to_string());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.to_string());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(found) = walk(next, edges, stack, done) {
                return Some(found);
            }
        }
        stack.pop();
        done.insert(node.to_string());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|n| walk(n, edges, &mut Vec::new(), &mut done))
}

#[test]
fn top_level_modules_form_no_import_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let edges = graph(&src);
    // The walk must see the modules it is meant to guard, or it checks nothing.
    for m in [
        "serve", "bench", "client", "net", "sys", "args", "error", "cli",
    ] {
        assert!(edges.contains_key(m), "module {m} not found under src/");
    }
    assert!(
        edges["cli"].contains("serve"),
        "cli's imports not seen: {:?}",
        edges["cli"]
    );
    if let Some(found) = circle(&edges) {
        panic!(
            "import circle among top-level modules: {}",
            found.join(" -> ")
        );
    }
    // The lowest modules import nothing of the crate at all.
    for low in ["args", "sys", "error"] {
        assert!(edges[low].is_empty(), "{low} imports {:?}", edges[low]);
    }
}

#[test]
fn the_circle_finder_finds_a_circle() {
    let mut edges = BTreeMap::new();
    edges.insert("a".to_string(), BTreeSet::from(["b".to_string()]));
    edges.insert("b".to_string(), BTreeSet::from(["c".to_string()]));
    edges.insert("c".to_string(), BTreeSet::from(["a".to_string()]));
    assert_eq!(circle(&edges).unwrap(), ["a", "b", "c", "a"]);
    edges.insert("c".to_string(), BTreeSet::new());
    assert_eq!(circle(&edges), None);
    assert_eq!(
        crate_paths("use crate::net::x; $crate::no; mycrate::no"),
        BTreeSet::from(["net".to_string()])
    );
}
