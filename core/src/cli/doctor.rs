//! `core-cli doctor`: flags → [`crate::doctor::DoctorConfig`] → one call → print.

use clap::Args;

use crate::backend::Backend;

#[derive(Args, Debug)]
pub struct DoctorArgs {
    /// Backends to run a short training smoke run on (comma-separated; `none` for the inventory
    /// only). wgpu's first step compiles its kernels (tens of seconds on a software driver).
    #[arg(long, default_value = "cpu", value_delimiter = ',', value_parser = smoke_backend)]
    pub smoke: Vec<Option<Backend>>,
    /// Steps of each smoke run (the tiny preset on the bundled sample).
    #[arg(long, default_value_t = 4)]
    pub smoke_steps: usize,
    /// One JSON object on stdout.
    #[arg(long)]
    pub json: bool,
}

fn smoke_backend(s: &str) -> Result<Option<Backend>, String> {
    if s == "none" { Ok(None) } else { s.parse::<Backend>().map(Some) }
}

pub fn run(a: &DoctorArgs) -> anyhow::Result<()> {
    let cfg = crate::doctor::DoctorConfig {
        smoke: a.smoke.iter().flatten().copied().collect(),
        smoke_steps: a.smoke_steps,
    };
    let report = crate::doctor::run(&cfg);
    if a.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", report.render());
    }
    if report.smoke.iter().any(|s| !s.ok) {
        anyhow::bail!("a smoke run failed (see above)");
    }
    Ok(())
}
