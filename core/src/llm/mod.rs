//! Talking to LLMs over the OpenAI chat-completions protocol: a client with retries (the judge of
//! the evaluations, the teacher of the data builder) and a server for our own models.

pub mod client;
pub mod server;

pub use client::{ChatMessage, ChatReply, ChatRequest, Client, ClientConfig, ClientError, Http};
