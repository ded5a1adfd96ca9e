//! The command line's flags become the library configurations they stand for (`core/src/cli`).

use clap::Parser;
use longalign::cli::{Cli, Command};

fn parse(args: &[&str]) -> Command {
    Cli::try_parse_from(std::iter::once("core-cli").chain(args.iter().copied())).unwrap().command.unwrap()
}

/// The embedded default is `core-cli train` on the tiny preset with the demo's rate and seed:
/// the same configuration, field for field.
#[test]
fn the_demo_trains_what_the_equivalent_train_flags_train() {
    let Command::Demo(d) = parse(&["demo", "--seed", "7", "--steps", "5"]) else { unreachable!() };
    let Command::Train(t) =
        parse(&["train", "--model", "tiny", "--lr", "0.003", "--seed", "7", "--steps", "5"])
    else {
        unreachable!()
    };
    assert_eq!(d.options().config(), t.to_config(1));
    // `core-cli` alone runs the library's default demo, which is `core-cli demo`'s.
    let Command::Demo(d) = parse(&["demo"]) else { unreachable!() };
    assert_eq!(d.options(), longalign::train::demo::DemoOptions::default());
}

#[test]
fn gpu_backends_bucket_sequences_by_default_and_cpu_does_not() {
    for (backend, bucket) in [("cpu", None), ("wgpu", Some(64)), ("cuda", Some(64))] {
        let Command::Train(t) = parse(&["train", "--backend", backend]) else { unreachable!() };
        assert_eq!(t.to_config(1).seq_bucket, bucket, "{backend}");
    }
}
