//! What the Ruby classes share: argument checks against the core's limits (`args`), Ruby ↔
//! JSON conversion (`convert`), error mapping and panic guards (`errors`), and waiting with
//! the GVL released (`nogvl`).

pub mod args;
pub mod convert;
pub mod errors;
pub mod nogvl;
