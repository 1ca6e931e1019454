//! Ruby bindings for tasker-core. Only argument conversion, GVL handling and error mapping
//! live here; all behaviour is in the `tasker-core` crate. `ruby_api/`: one file per Ruby
//! class; `helpers/`: what they share.

mod helpers;
mod ruby_api;

pub(crate) use helpers::{args, convert, errors, nogvl};
pub(crate) use ruby_api::{bench, circuit_breakers, engine, log, native, step_event};

use magnus::{Error, Ruby};

#[cfg(feature = "dhat-heap")]
#[global_allocator]
static ALLOC: dhat::Alloc = dhat::Alloc;

#[magnus::init(name = "tasker_core_rb")]
fn init(ruby: &Ruby) -> Result<(), Error> {
    let native = native::init(ruby)?;
    engine::init(ruby, native)?;
    step_event::init(ruby, native)?;
    bench::init(ruby, native)?;
    circuit_breakers::init(ruby, native)?;
    log::init(native)?;
    Ok(())
}
