//! `core-cli plan`: batch plans and what they cost, one strategy or all three side by side.

use anyhow::bail;

use super::PlanArgs;
use crate::data::plan_input::{PlanInput, PlanSet};
use crate::plan::{PlanStats, Strategy};
use crate::util::table::thousands;

/// Plans what `args` names under each strategy it asks for.
fn plan_all(args: &PlanArgs) -> anyhow::Result<PlanSet> {
    let strategies = match args.compare {
        true => vec![Strategy::Naive, Strategy::Sorted, Strategy::Pack],
        false => vec![args.batch.strategy],
    };
    let input = match &args.lengths {
        Some(path) => PlanInput::Lengths(path.clone()),
        None => PlanInput::Data(args.data.source()),
    };
    input.plan(&args.batch.options(args.devices), &strategies)
}

/// What `core-cli plan … --json` prints, as a value (the app's tests compare against it).
pub fn json(args: &PlanArgs) -> anyhow::Result<serde_json::Value> {
    plan_all(args)?.json(args.compare)
}

pub fn run(args: &PlanArgs) -> anyhow::Result<()> {
    if args.compare && args.out.is_some() {
        bail!("--out writes one plan: use it without --compare");
    }
    let set = plan_all(args)?;
    let results = &set.plans;
    if let Some(out) = &args.out {
        let mut buf = Vec::new();
        results[0].1.plan.write_jsonl(&mut buf)?;
        crate::util::write_atomic(out, &buf)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&set.json(args.compare)?)?);
        return Ok(());
    }
    println!("input: {}", set.source);
    for (cfg, r) in results {
        println!(
            "{:>6}: {} — planned in {:.3}s",
            cfg.strategy.to_string(),
            crate::plan::report::describe(cfg),
            r.seconds
        );
    }
    println!();
    let named: Vec<(String, &PlanStats)> =
        results.iter().map(|(c, r)| (c.strategy.to_string(), &r.stats)).collect();
    print!("{}", crate::plan::report::compare_table(&named));
    if let Some(m) = &args.model {
        let mcfg = crate::train::memory::model_config(&crate::hub::resolve_model(m)?)?;
        let train = crate::train::TrainConfig::embedded_default();
        println!("\nestimated peak training memory per device, model {m} (padding-free):");
        for (c, r) in results {
            let [plain, ck] = crate::train::memory::for_plan(&mcfg, &train, &r.plan);
            let ck = crate::util::table::compact(ck.total as f64);
            println!(
                "{:>6}: {}; with --activation-checkpointing {ck}B",
                c.strategy.to_string(),
                plain.render()
            );
        }
    }
    if let Some(out) = &args.out {
        println!(
            "\nwrote {} ({} micro-batches)",
            out.display(),
            thousands(results[0].1.stats.micro_batches as u64)
        );
    }
    Ok(())
}
