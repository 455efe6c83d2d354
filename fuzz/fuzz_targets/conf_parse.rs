//! Fuzz libvirt's configuration grammar: parsing must never panic, and anything that parses
//! must render and parse back to the same names and values.

#![no_main]

use disklock_conf::grammar;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // The grammar works on text; loading refuses invalid UTF-8 before the parser sees it.
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(doc) = grammar::parse(text) else {
        return;
    };
    // Every string the parser produces is renderable, so rendering must succeed.
    let rendered = doc.to_text().expect("a parsed document renders");
    let again = grammar::parse(&rendered).expect("rendered text parses");
    let before: Vec<_> = doc.entries.iter().map(|e| (&e.name, &e.value)).collect();
    let after: Vec<_> = again.entries.iter().map(|e| (&e.name, &e.value)).collect();
    assert_eq!(
        before, after,
        "round trip changed the document; rendered:\n{rendered}"
    );
});
