//! The shape of the code (issue 12): the module graph of `src/` has no cycle. A module depends
//! on another when it names it (`crate::a::b`, `use crate::{a, b}`, `super::x`) outside
//! comments and its tests; a module re-exporting its children is not a dependency.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

fn modules() -> BTreeMap<String, String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut out = BTreeMap::new();
    let mut stack = vec![root.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let rel = path.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
            let Some(stem) = rel.strip_suffix(".rs") else { continue };
            let module = stem.trim_end_matches("/mod").replace('/', "::");
            if module == "lib" || module == "main" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            let code = text.split("#[cfg(test)]\nmod tests").next().unwrap();
            let code: String =
                code.lines().filter(|l| !l.trim_start().starts_with("//")).collect::<Vec<_>>().join("\n");
            out.insert(module, code);
        }
    }
    out
}

/// The longest module path that `path` starts with.
fn resolve(path: &str, known: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len()).rev().map(|n| parts[..n].join("::")).find(|p| known.contains(p))
}

/// The module paths named after each `prefix` in `code` (`prefix` is `crate::` or `super::`).
fn named(code: &str, prefix: &str) -> Vec<String> {
    let mut out = Vec::new();
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    for (i, _) in code.match_indices(prefix) {
        let rest = &code[i + prefix.len()..];
        if let Some(list) = rest.strip_prefix('{') {
            let list = &list[..list.find('}').unwrap_or(list.len())];
            out.extend(list.split(',').map(|p| p.trim().split([' ', '{']).next().unwrap_or("").to_string()));
        } else {
            let path: String = rest.chars().take_while(|&c| ident(c)).collect();
            out.push(path.trim_end_matches(':').to_string());
        }
    }
    out
}

#[test]
fn the_module_graph_has_no_cycle() {
    let modules = modules();
    let known: BTreeSet<String> = modules.keys().cloned().collect();
    let mut edges: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (module, code) in &modules {
        let parent = module.rsplit_once("::").map(|(p, _)| p.to_string());
        let mut targets: Vec<String> = named(code, "crate::");
        for s in named(code, "super::") {
            targets.push(match &parent {
                Some(p) => format!("{p}::{s}"),
                None => s,
            });
        }
        let deps = edges.entry(module.clone()).or_default();
        for t in targets.iter().filter_map(|t| resolve(t, &known)) {
            // Not itself, not an ancestor's re-export back to it, not its own children.
            if t != *module && !module.starts_with(&format!("{t}::")) && !t.starts_with(&format!("{module}::")) {
                deps.insert(t);
            }
        }
    }
    // Depth-first search for a back edge.
    fn visit(
        m: &str,
        edges: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        match state.get(m) {
            Some(1) => return Some(path[path.iter().position(|p| p == m).unwrap()..].to_vec()),
            Some(2) => return None,
            _ => {}
        }
        state.insert(m.to_string(), 1);
        path.push(m.to_string());
        for d in edges.get(m).into_iter().flatten() {
            if let Some(cycle) = visit(d, edges, state, path) {
                return Some(cycle);
            }
        }
        path.pop();
        state.insert(m.to_string(), 2);
        None
    }
    // Files: no cycle (a parent's `mod` line and its children's `super::` are not imports).
    let mut state = BTreeMap::new();
    for m in edges.keys() {
        if let Some(cycle) = visit(m, &edges, &mut state, &mut Vec::new()) {
            panic!("the module graph has a cycle: {}", cycle.join(" -> "));
        }
    }
    // Top-level modules: no cycle either (a module contains its children).
    let top = |m: &str| m.split("::").next().unwrap().to_string();
    let mut layers: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (m, deps) in &edges {
        let entry = layers.entry(top(m)).or_default();
        entry.extend(deps.iter().map(|d| top(d)).filter(|d| *d != top(m)));
    }
    let mut state = BTreeMap::new();
    for m in layers.keys() {
        if let Some(cycle) = visit(m, &layers, &mut state, &mut Vec::new()) {
            panic!("the top-level modules have a cycle: {}", cycle.join(" -> "));
        }
    }
    assert!(edges["cache::files"].contains("store"), "the scanner sees dependencies");
    assert!(!edges["store"].iter().any(|d| d.starts_with("cache")), "the store never names the engine");
}

/// Issue 26: handlers reach the engine through its facade only: `crate::cache::<Type>`, never
/// `crate::cache::<module>::…` (the engine's parts are its own business).
#[test]
fn the_server_uses_only_the_engines_facade() {
    let modules = modules();
    let engine_parts: BTreeSet<String> = modules
        .keys()
        .filter_map(|m| m.strip_prefix("cache::"))
        .map(|m| m.split("::").next().unwrap().to_string())
        .collect();
    assert!(engine_parts.contains("fill"), "the scanner sees the engine's modules");
    let mut reaching_in = Vec::new();
    for (module, code) in modules.iter().filter(|(m, _)| m.starts_with("server")) {
        for path in named(code, "crate::") {
            let mut parts = path.split("::");
            if parts.next() == Some("cache")
                && let Some(part) = parts.next()
                && engine_parts.contains(part)
            {
                reaching_in.push(format!("{module} names crate::{path}"));
            }
        }
    }
    assert!(reaching_in.is_empty(), "the server reaches into the engine:\n{}", reaching_in.join("\n"));
}

/// Issue 26: `respond` and `error` choose every status the server answers with; a handler
/// translates and never names one.
#[test]
fn statuses_are_chosen_in_respond_and_error_only() {
    let mut literal = Vec::new();
    for (module, code) in modules().iter().filter(|(m, _)| m.starts_with("server")) {
        if matches!(module.as_str(), "server::respond" | "server::error") {
            continue;
        }
        for (n, line) in code.lines().enumerate() {
            if line.contains("StatusCode::") || line.contains("status_mut()") {
                literal.push(format!("{module}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert!(literal.is_empty(), "statuses chosen outside respond/error:\n{}", literal.join("\n"));
}
