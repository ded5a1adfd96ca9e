//! The built-in byte-level tokenizer and ChatML template of the embedded default.
//!
//! Token ids 0..=255 are the bytes themselves, so any text round-trips and nothing needs
//! downloading; three special tokens follow. It is a real `tokenizer.json` (byte-level BPE with no
//! merges, GPT-2's byte-to-unicode alphabet) plus a real Jinja template, so the embedded default
//! goes through exactly the code path of a Hugging Face model directory, and an exported model
//! loads in transformers with `AutoTokenizer`.

use std::collections::BTreeMap;

use serde_json::json;

/// `<|endoftext|>`: padding and document end.
pub const ENDOFTEXT: u32 = 256;
/// `<|im_start|>`: starts a turn.
pub const IM_START: u32 = 257;
/// `<|im_end|>`: ends a turn; the end-of-sequence token for generation.
pub const IM_END: u32 = 258;
/// Vocabulary size of the built-in tokenizer.
pub const VOCAB_SIZE: usize = 259;

/// ChatML, as Qwen2 uses it but without a default system prompt.
pub const CHAT_TEMPLATE: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

/// GPT-2's reversible map from bytes to printable unicode characters.
pub fn bytes_to_unicode() -> [char; 256] {
    let mut out = ['\0'; 256];
    let mut extra = 0u32;
    for b in 0..256u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        out[b as usize] = if printable {
            char::from_u32(b).unwrap()
        } else {
            extra += 1;
            char::from_u32(255 + extra).unwrap()
        };
    }
    out
}

/// The built-in `tokenizer.json`.
pub fn tokenizer_json() -> String {
    let vocab: serde_json::Map<String, serde_json::Value> =
        bytes_to_unicode().iter().enumerate().map(|(b, c)| (c.to_string(), json!(b))).collect();
    let added: Vec<_> = [(ENDOFTEXT, "<|endoftext|>"), (IM_START, "<|im_start|>"), (IM_END, "<|im_end|>")]
        .iter()
        .map(|(id, content)| {
            json!({"id": id, "content": content, "single_word": false, "lstrip": false, "rstrip": false,
                   "normalized": false, "special": true})
        })
        .collect();
    let byte_level =
        json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": false, "use_regex": true});
    let tok = json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": byte_level,
        "post_processor": null,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
                  "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false,
                  "ignore_merges": false, "vocab": vocab, "merges": []}
    });
    serde_json::to_string_pretty(&tok).expect("static JSON")
}

/// Special tokens as transformers names them.
pub fn special_tokens() -> BTreeMap<String, String> {
    BTreeMap::from([
        ("eos_token".to_string(), "<|im_end|>".to_string()),
        ("pad_token".to_string(), "<|endoftext|>".to_string()),
    ])
}

/// The built-in `tokenizer_config.json` (what transformers reads next to `tokenizer.json`).
pub fn tokenizer_config_json() -> String {
    let cfg = json!({
        "tokenizer_class": "PreTrainedTokenizerFast",
        "model_max_length": 1_000_000_000,
        "bos_token": null,
        "eos_token": "<|im_end|>",
        "pad_token": "<|endoftext|>",
        "chat_template": CHAT_TEMPLATE,
        "clean_up_tokenization_spaces": false,
    });
    serde_json::to_string_pretty(&cfg).expect("static JSON")
}
