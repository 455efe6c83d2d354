//! The `disklock` library's modules stand in layers (ARCHITECTURE.md, "Layers"): a module
//! may use modules of its own layer or below, never above, and no two modules use each
//! other. This test reads every `crate::…` and `super::…` path in `src/` (test modules
//! aside) and checks both rules, so a new import that breaks them fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Each module's layer, lowest first. A module not listed fails the test: place it.
const LAYERS: &[(&str, u8)] = &[
    // Leaves: argument definitions, exit codes, output.
    ("cli", 0),
    ("exit", 0),
    ("output", 0),
    // What every command and the daemon stand on.
    ("settings", 1),
    ("lockspace", 1),
    ("pr", 1),
    ("pr::engine", 1),
    ("pr::hostkey", 1),
    // The lease core and the daemon.
    ("daemon", 2),
    ("daemon::access", 2),
    ("daemon::idle", 2),
    ("daemon::lanes", 2),
    ("daemon::log", 2),
    ("daemon::protocol", 2),
    ("daemon::table", 2),
    ("daemon::pr_layer", 2),
    ("daemon::plan", 2),
    ("daemon::server", 2),
    // Talking to the daemon.
    ("client", 3),
    // The commands.
    ("acquire", 4),
    ("config_cmd", 4),
    ("inspect", 4),
    ("lookup", 4),
    ("pr_cmd", 4),
    ("run", 4),
    ("status", 4),
];

/// `src/a/b.rs` and `src/a/b/mod.rs` → `a::b`; `None` for the crate roots and test files.
fn module_of(rel: &Path) -> Option<String> {
    let s = rel.to_str()?.strip_suffix(".rs")?;
    let s = s.strip_suffix("/mod").unwrap_or(s);
    if matches!(s, "lib" | "main") || s.ends_with("/tests") {
        return None;
    }
    Some(s.replace('/', "::"))
}

/// The source without its `#[cfg(test)]` modules (tests may reach anywhere).
fn without_tests(text: &str) -> &str {
    text.find("#[cfg(test)]\nmod tests")
        .map_or(text, |i| &text[..i])
}

/// The longest known module that `path` (after `crate::`) names.
fn target(path: &str, known: &BTreeSet<String>) -> Option<String> {
    let parts: Vec<&str> = path.split("::").collect();
    (1..=parts.len())
        .rev()
        .map(|n| parts[..n].join("::"))
        .find(|m| known.contains(m))
}

/// The `crate::…` and `super::…` paths in `text`, as module paths from the crate root.
fn paths(text: &str, module: &str) -> Vec<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut out = Vec::new();
    for (prefix, base) in [("crate::", String::new()), ("super::", parent(module))] {
        let mut rest = text;
        while let Some(i) = rest.find(prefix) {
            let before = rest[..i].chars().next_back();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let end = rest.find(|c: char| !ident(c)).unwrap_or(rest.len());
            let p = rest[..end].trim_end_matches(':');
            if !p.is_empty() {
                out.push(if base.is_empty() {
                    p.to_owned()
                } else {
                    format!("{base}::{p}")
                });
            }
        }
    }
    out
}

fn parent(module: &str) -> String {
    module
        .rsplit_once("::")
        .map_or(String::new(), |(p, _)| p.to_owned())
}

fn sources(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, root, out);
        } else if p.extension().is_some_and(|x| x == "rs")
            && let Some(m) = module_of(p.strip_prefix(root).unwrap())
        {
            out.push((m, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

#[test]
fn modules_use_only_their_layer_and_below_and_never_each_other() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &src, &mut files);
    let layer: BTreeMap<&str, u8> = LAYERS.iter().copied().collect();
    let known: BTreeSet<String> = files.iter().map(|(m, _)| m.clone()).collect();
    for m in &known {
        assert!(
            layer.contains_key(m.as_str()),
            "module {m} has no layer: add it to LAYERS here and to ARCHITECTURE.md"
        );
    }
    let mut uses: BTreeSet<(String, String)> = BTreeSet::new();
    let mut wrong = Vec::new();
    for (m, text) in &files {
        for p in paths(without_tests(text), m) {
            let Some(t) = target(&p, &known) else {
                continue;
            };
            // A module's own items, or its parent's (`super::` items that are not modules).
            if &t == m || m.starts_with(&format!("{t}::")) {
                continue;
            }
            let (lm, lt) = (layer[m.as_str()], layer[t.as_str()]);
            if lt > lm {
                wrong.push(format!(
                    "{m} (layer {lm}) uses {t} (layer {lt}): crate::{p}"
                ));
            }
            uses.insert((m.clone(), t));
        }
    }
    for (a, b) in &uses {
        if uses.contains(&(b.clone(), a.clone())) && a < b {
            wrong.push(format!("{a} and {b} use each other"));
        }
    }
    assert!(wrong.is_empty(), "layering broken:\n{}", wrong.join("\n"));
}

#[test]
fn the_checker_sees_imports() {
    let known: BTreeSet<String> = ["pr", "pr::engine", "daemon", "daemon::table"]
        .into_iter()
        .map(String::from)
        .collect();
    let text = "use crate::pr::engine::{self, Path};\nlet x = super::table::Target;\n";
    let ps = paths(text, "daemon::server");
    assert_eq!(
        ps,
        ["pr::engine::", "daemon::table::Target"].map(|s| s.trim_end_matches(':').to_owned())
    );
    assert_eq!(target(&ps[0], &known).as_deref(), Some("pr::engine"));
    assert_eq!(target(&ps[1], &known).as_deref(), Some("daemon::table"));
    assert_eq!(
        module_of(Path::new("daemon/mod.rs")).as_deref(),
        Some("daemon")
    );
    assert_eq!(module_of(Path::new("pr/engine/tests.rs")), None);
}
