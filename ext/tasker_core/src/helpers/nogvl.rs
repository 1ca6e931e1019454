//! Waiting without Ruby's GVL. The waiting thread releases the GVL so other Ruby threads run;
//! an unblocking function lets `Thread#kill`, `Thread#raise`, `Timeout` and signals interrupt
//! the wait; panics are caught before they could unwind into C.
//!
//! `rb_thread_call_without_gvl2` is used rather than `rb_thread_call_without_gvl`: the latter
//! checks interrupts itself and may longjmp over our Rust frames (leaking what they own). Here
//! the caller drops what it holds and then lets Ruby raise with `Ruby::thread_check_ints`.

use std::ffi::c_void;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use crossbeam_channel::{bounded, select, Receiver, Sender};
use magnus::{Error, Ruby};

/// How a wait ended.
pub enum Waited<T> {
    Value(T),
    TimedOut,
    /// Every sender is gone.
    Closed,
    /// Ruby asked the thread to stop waiting (check interrupts next).
    Interrupted,
    /// The wait itself panicked: raise it (`errors::internal`), never hand back nothing.
    Panicked(Box<dyn std::any::Any + Send>),
}

struct RecvCall<'a, T> {
    rx: &'a Receiver<T>,
    cancel_rx: Receiver<()>,
    cancel_tx: Sender<()>,
    timeout: Option<Duration>,
    out: Option<Waited<T>>,
}

unsafe extern "C" fn recv_body<T>(data: *mut c_void) -> *mut c_void {
    // SAFETY: `data` points at the RecvCall on the caller's stack, alive for the whole call.
    let call = unsafe { &mut *(data as *mut RecvCall<'_, T>) };
    let result = catch_unwind(AssertUnwindSafe(|| {
        let never = crossbeam_channel::never();
        let deadline = match call.timeout {
            Some(t) => crossbeam_channel::after(t),
            None => never.clone(),
        };
        select! {
            recv(call.rx) -> msg => match msg {
                Ok(v) => Waited::Value(v),
                Err(_) => Waited::Closed,
            },
            recv(call.cancel_rx) -> _ => Waited::Interrupted,
            recv(deadline) -> _ => Waited::TimedOut,
        }
    }));
    call.out = Some(result.unwrap_or_else(Waited::Panicked));
    std::ptr::null_mut()
}

unsafe extern "C" fn recv_unblock<T>(data: *mut c_void) {
    // SAFETY: as above; only the cancel sender (thread-safe) is touched.
    let call = unsafe { &*(data as *const RecvCall<'_, T>) };
    let _ = call.cancel_tx.try_send(());
}

/// Receive from `rx` with the GVL released, up to `timeout` (None: no limit).
pub fn recv<T: Send>(rx: &Receiver<T>, timeout: Option<Duration>) -> Waited<T> {
    let (cancel_tx, cancel_rx) = bounded(1);
    let mut call = RecvCall {
        rx,
        cancel_rx,
        cancel_tx,
        timeout,
        out: None,
    };
    let ptr = &mut call as *mut RecvCall<'_, T> as *mut c_void;
    // SAFETY: body and unblock only use `call`, which outlives this call; neither touches Ruby.
    unsafe {
        rb_sys::rb_thread_call_without_gvl2(
            Some(recv_body::<T>),
            ptr,
            Some(recv_unblock::<T>),
            ptr,
        );
    }
    call.out.unwrap_or(Waited::Interrupted)
}

/// Run a blocking operation (connecting, migrating, shutting down, flushing) with the GVL
/// released and interruptibly: it runs on a thread of its own while this one waits in
/// [`recv`], so `Thread#raise`, `Timeout` and signals interrupt the wait like any other. An
/// interrupted caller raises at once; the operation still completes on its thread and its
/// value is dropped there (an engine started that way is shut down by its `Drop`).
pub fn run<F, T>(ruby: &Ruby, f: F) -> Result<std::thread::Result<T>, Error>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = bounded(1);
    std::thread::Builder::new()
        .name("tasker-call".into())
        .spawn(move || {
            let _ = tx.send(catch_unwind(AssertUnwindSafe(f)));
        })
        .map_err(|e| {
            crate::errors::error(ruby, "InternalError", format!("cannot start a thread: {e}"))
        })?;
    loop {
        match recv(&rx, None) {
            Waited::Value(out) => return Ok(out),
            Waited::Interrupted => ruby.thread_check_ints()?,
            Waited::Panicked(p) => return Ok(Err(p)),
            Waited::TimedOut | Waited::Closed => {
                return Ok(Err(Box::new(
                    "the operation's thread ended without a result",
                )))
            }
        }
    }
}
