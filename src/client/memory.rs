//! `rustrack memory`: what every process of an instance costs, and how much
//! each worker shares with its preloader through copy-on-write.

use anyhow::Result;

use super::{admin_call, human_bytes, resolve};
use crate::cli::StatusArgs;
use crate::report::{AdminRequest, MemoryReport};

pub fn run(args: StatusArgs) -> Result<i32> {
    let dir = resolve(&args.client)?;
    let value = admin_call(&dir, &AdminRequest::Memory)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&value)?);
    } else {
        let report: MemoryReport = serde_json::from_value(value)?;
        print!("{}", render(&report));
    }
    Ok(0)
}

pub fn render(report: &MemoryReport) -> String {
    let mut out = format!(
        "{:<8} {:<8} {:<20} {:>10} {:>10} {:>12} {:>12} {:>12} {:>8}\n",
        "PID", "PPID", "ROLE", "RSS", "PSS", "PRIV DIRTY", "SHARED CLEAN", "SHARED DIRTY", "COW"
    );
    for p in &report.processes {
        let m = p.memory.unwrap_or_default();
        let mut role = match p.worker_id {
            Some(id) => format!("{} {id}", p.role.as_str()),
            None => p.role.as_str().to_string(),
        };
        if let Some(app) = &p.app {
            role = format!("{app}: {role}");
        }
        let cow = report
            .sharing(p)
            .map(|f| format!("{:.0}%", f * 100.0))
            .unwrap_or_else(|| "-".into());
        out += &format!(
            "{:<8} {:<8} {:<20} {:>10} {:>10} {:>12} {:>12} {:>12} {:>8}\n",
            p.pid,
            p.ppid.map(|x| x.to_string()).unwrap_or_else(|| "-".into()),
            role,
            human_bytes(m.rss),
            human_bytes(m.pss),
            human_bytes(m.private_dirty),
            human_bytes(m.shared_clean),
            human_bytes(m.shared_dirty),
            cow,
        );
    }
    out += &format!(
        "\nTotal PSS: {}   Total private dirty: {}   ({} spawning)\n",
        human_bytes(report.total_pss),
        human_bytes(report.total_private_dirty),
        report.spawn_method
    );
    out += "PSS counts each shared page once across processes: the total is what the app costs.\n";
    if report.templates().next().is_some() {
        out += "COW: how much of its template's (preloader's or mold's) memory a worker still shares.\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_shows_sharing_with_the_preloader() {
        let table = render(&crate::report::sample_memory_report());
        assert!(table.contains("worker 1"), "{table}");
        assert!(table.contains("75%"), "{table}");
        assert!(table.contains("COW"), "{table}");
    }
}
