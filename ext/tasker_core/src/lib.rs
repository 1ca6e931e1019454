//! Ruby bindings for tasker-core. Only argument conversion, GVL handling and error mapping
//! live here; all behaviour is in the `tasker-core` crate. One file per Ruby class.

mod args;
mod bench;
mod circuit_breaker;
mod convert;
mod errors;
mod logging;
mod native;
mod nogvl;
mod step_event;

use magnus::{Error, Ruby};

#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[magnus::init(name = "tasker_core_rb")]
fn init(ruby: &Ruby) -> Result<(), Error> {
    let native = native::init(ruby)?;
    step_event::init(ruby, native)?;
    bench::init(ruby, native)?;
    circuit_breaker::init(ruby, native)?;
    logging::init(native)?;
    Ok(())
}
