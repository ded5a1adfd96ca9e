//! Small shared helpers that belong to no one module: files written atomically (`fs`), the
//! frozen seeded generator every reproducible thing draws from (`rng`), process memory (`mem`) and
//! time stamps (`time`), and plain-text tables for reports (`table`).

pub mod fs;
pub mod mem;
pub mod rng;
pub mod table;
pub mod time;

pub use fs::{cut_torn_tail, write_atomic};
