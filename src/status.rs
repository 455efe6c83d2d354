//! `disklock status`: every lease the daemon holds.

use crate::acquire::call;
use crate::cli::StatusArgs;
use crate::daemon::protocol::{Request, StatusReply};
use crate::exit::Code;
use crate::output::write_stdout;
use crate::output::{render, table};
use crate::settings::Settings;

pub fn run(s: &Settings, args: &StatusArgs) -> anyhow::Result<Code> {
    let reply: StatusReply = call(s, &Request::Status)?;
    let out = if args.json {
        let mut o = serde_json::to_string_pretty(&reply.leases)?;
        o.push('\n');
        o
    } else if reply.leases.is_empty() {
        "no leases held\n".to_owned()
    } else {
        let mut t = table(&["DISK", "MODE", "OWNERS", "SINCE", "KEY", "LOCKSPACE"]);
        for l in &reply.leases {
            let mut owners: Vec<String> = l
                .owners
                .iter()
                .map(|o| format!("{}[{}]", o.name, o.pid))
                .collect();
            if l.hidden_owners > 0 {
                owners.push(format!("({} of other users)", l.hidden_owners));
            }
            t.add_row([
                l.disk.clone(),
                if l.lost.is_some() {
                    format!("{} (LOST)", l.mode)
                } else {
                    l.mode.to_string()
                },
                owners.join(","),
                l.since.to_string(),
                l.key.clone(),
                l.lockspace.display().to_string(),
            ]);
        }
        let mut o = render(&t);
        for l in &reply.leases {
            if let Some(why) = &l.lost {
                o.push_str(&format!(
                    "{}: LOST at the storage: {why}; the lease is held until its owner releases it\n",
                    l.disk
                ));
            }
        }
        o
    };
    write_stdout(&out)?;
    Ok(Code::Ok)
}
