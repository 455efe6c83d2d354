//! `disklock config`: the configuration in effect and where each value came from.

use disklock_conf::Key;
use disklock_conf::grammar::render_value_text;
use serde::Serialize;

use crate::cli::ConfigArgs;
use crate::exit::Code;
use crate::output::write_stdout;
use crate::settings::Settings;

#[derive(Serialize)]
struct Row {
    key: &'static str,
    value: serde_json::Value,
    origin: String,
}

pub fn run(s: &Settings, args: &ConfigArgs) -> anyhow::Result<Code> {
    let cfg = &s.config;
    let rows: Vec<Row> = Key::all()
        .map(|k| {
            let v = cfg.value(k);
            Row {
                key: k.name(),
                value: to_json(&v),
                origin: cfg.origin(k).to_string(),
            }
        })
        .collect();
    let out = if args.json {
        let mut o = serde_json::to_string_pretty(&serde_json::json!({
            "files_read": s.files_read,
            "settings": rows,
        }))?;
        o.push('\n');
        o
    } else {
        let mut t = crate::output::table(&["KEY", "VALUE", "FROM"]);
        for k in Key::all() {
            let v = render_value_text(&cfg.value(k)).unwrap_or_else(|_| "?".to_owned());
            t.add_row([k.name().to_owned(), v, cfg.origin(k).to_string()]);
        }
        let mut o = crate::output::render(&t);
        if s.files_read.is_empty() {
            o.push_str("(no configuration file found: built-in defaults)\n");
        }
        o
    };
    write_stdout(&out)?;
    Ok(Code::Ok)
}

fn to_json(v: &disklock_conf::grammar::Value) -> serde_json::Value {
    use disklock_conf::grammar::Value;
    match v {
        Value::Int(i) => (*i).into(),
        Value::Str(s) => s.clone().into(),
        Value::List(l) => l.iter().map(to_json).collect(),
    }
}
