//! Evaluations: LongBench-Chat with an LLM judge (and a labelled overlap fallback), and
//! needle-in-a-haystack.

pub mod answer;
pub mod cache;
pub mod fetch;
pub mod longbench_chat;
pub mod needle;
pub mod overlap;
