//! The `local` provider: no network, no model, deterministic. Extractive summarization
//! (TextRank), rule-based action items with due dates and priorities, and template-based
//! generation. It is a useful baseline and the default, not a language model: it selects
//! and rearranges what the input says and never invents content.

pub mod dates;
pub mod generate;
pub mod summarize;
pub mod tasks;
pub mod text;

/// The provider name jobs use to ask for it.
pub const NAME: &str = "local";
/// The "model" reported in outputs and usage.
pub const MODEL: &str = "switchyard-local-1";
