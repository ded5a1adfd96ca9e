//! Opt-in parity of our LoRA adapters with PEFT (needs `python3` with `torch`, `transformers` and
//! `peft`):
//!
//! ```sh
//! pip install torch transformers peft
//! cargo test -p longalign-core --test parity_peft -- --ignored
//! ```
//!
//! On tiny random Llama models made by transformers (untied and tied embeddings), `core-cli train
//! --lora-rank …` trains adapters on every projection plus the embeddings and norms; then PEFT
//! loads our `adapter/` onto the transformers base, transformers loads our merged `export/`, and
//! both must give our logits (base + `--adapter`) within 1e-4.

use std::path::{Path, PathBuf};
use std::process::Command;

use burn::backend::Flex;
use longalign::data::builtin;
use longalign::data::synth::{SynthConfig, generate, to_jsonl};
use longalign::model::PackedRows;
use longalign::model::peft::load_hf_adapted;
use serde_json::Value;

fn python(args: &[&std::ffi::OsStr]) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/parity/lora_peft.py");
    let status = Command::new("python3").arg(script).args(args).status().expect("python3 runs");
    assert!(status.success(), "lora_peft.py {args:?} failed");
}

fn train(dir: &Path, model: &str, out: &str) {
    let args = [
        "train",
        "--model",
        model,
        "--data",
        "data.jsonl",
        "--max-tokens",
        "512",
        "--steps",
        "4",
        "--quiet",
        "--lora-rank",
        "4",
        "--lora-alpha",
        "16",
        "--lora-targets",
        "all",
        "--train",
        "embeddings,norms",
        "--lr",
        "2e-2",
        "--out",
        out,
    ];
    let o = Command::new(env!("CARGO_BIN_EXE_core-cli")).args(args).current_dir(dir).output().unwrap();
    assert!(o.status.success(), "train failed: {}", String::from_utf8_lossy(&o.stderr));
}

#[test]
#[ignore = "needs python3 with torch, transformers and peft"]
fn peft_loads_our_adapters_and_transformers_our_merged_export() {
    let d = tempfile::tempdir().unwrap();
    let tok = d.path().join("tok");
    std::fs::create_dir_all(&tok).unwrap();
    std::fs::write(tok.join("tokenizer.json"), builtin::tokenizer_json()).unwrap();
    std::fs::write(tok.join("tokenizer_config.json"), builtin::tokenizer_config_json()).unwrap();
    let data = generate(SynthConfig {
        examples: 16,
        seed: 3,
        min_len: 100,
        max_len: 240,
        mix: longalign::data::synth::MIX,
    });
    std::fs::write(d.path().join("data.jsonl"), to_jsonl(&data)).unwrap();
    python(&["make".as_ref(), d.path().as_os_str(), tok.as_os_str()]);
    let seqs: Vec<Vec<u32>> = vec![(0..40).map(|i| (i * 31 % 250) as u32).collect(), vec![7, 8, 9, 257, 3]];
    std::fs::write(d.path().join("seqs.json"), serde_json::to_string(&seqs).unwrap()).unwrap();
    for name in ["untied", "tied"] {
        let run = format!("run-{name}");
        train(d.path(), name, &run);
        let run = d.path().join(run);
        let out = d.path().join(format!("{name}.json"));
        python(&[
            "check".as_ref(),
            d.path().join(name).as_os_str(),
            run.join("adapter").as_os_str(),
            run.join("export").as_os_str(),
            d.path().join("seqs.json").as_os_str(),
            out.as_os_str(),
        ]);
        let theirs: Value = serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        let device = Default::default();
        let (cfg, model) =
            load_hf_adapted::<Flex>(&d.path().join(name), Some(&run.join("adapter")), &device).unwrap();
        let (_, base) = load_hf_adapted::<Flex>(&d.path().join(name), None, &device).unwrap();
        for (k, s) in seqs.iter().enumerate() {
            let rows = PackedRows::single(s);
            let ours = model.logits(&cfg, &rows, &device).into_data().to_vec::<f32>().unwrap();
            let untrained = base.logits(&cfg, &rows, &device).into_data().to_vec::<f32>().unwrap();
            for which in ["peft", "merged"] {
                let t: Vec<f32> = theirs[which][k]
                    .as_array()
                    .unwrap()
                    .iter()
                    .flat_map(|r| r.as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32))
                    .collect();
                assert_eq!(t.len(), ours.len());
                let worst = ours.iter().zip(&t).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                eprintln!("{name} {which} seq {k}: max |Δlogit| {worst:.2e}");
                assert!(worst <= 1e-4, "{name} {which} seq {k}: {worst}");
            }
            let moved = ours.iter().zip(&untrained).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
            assert!(moved > 1e-2, "{name}: training moved the logits ({moved})");
        }
    }
}
