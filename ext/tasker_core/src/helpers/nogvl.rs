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

struct RunCall<F, T> {
    f: Option<F>,
    out: Option<std::thread::Result<T>>,
}

unsafe extern "C" fn run_body<F: FnOnce() -> T, T>(data: *mut c_void) -> *mut c_void {
    // SAFETY: `data` points at the RunCall on the caller's stack.
    let call = unsafe { &mut *(data as *mut RunCall<F, T>) };
    if let Some(f) = call.f.take() {
        call.out = Some(catch_unwind(AssertUnwindSafe(f)));
    }
    std::ptr::null_mut()
}

/// Run a bounded blocking operation (connecting, shutting down) with the GVL released. It
/// cannot be interrupted; use [`recv`] for waits of unbounded length.
///
/// `rb_thread_call_without_gvl2` does not run the function at all while an interrupt is
/// pending: Ruby then gets to handle it (which may raise), and the call is tried again. An
/// interrupt that stays pending (masked by `Thread.handle_interrupt`) makes the operation run
/// with the GVL held rather than not at all.
pub fn run<F, T>(ruby: &Ruby, f: F) -> Result<std::thread::Result<T>, Error>
where
    F: FnOnce() -> T,
{
    let mut call = RunCall {
        f: Some(f),
        out: None,
    };
    for _ in 0..3 {
        let ptr = &mut call as *mut RunCall<F, T> as *mut c_void;
        // SAFETY: the body only uses `call`; the closure must not touch Ruby (callers ensure it).
        unsafe {
            rb_sys::rb_thread_call_without_gvl2(
                Some(run_body::<F, T>),
                ptr,
                None,
                std::ptr::null_mut(),
            );
        }
        if let Some(out) = call.out.take() {
            return Ok(out);
        }
        ruby.thread_check_ints()?;
    }
    match call.f.take() {
        Some(f) => Ok(catch_unwind(AssertUnwindSafe(f))),
        None => Ok(Err(Box::new("operation did not run"))),
    }
}
