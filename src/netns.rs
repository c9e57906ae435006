//! Running code inside a named network namespace (`ip netns add NAME`).
//!
//! A packet socket belongs to the namespace of the thread that created it, for its whole life, so
//! entering a namespace only while opening is enough:
//!
//! ```no_run
//! let cap = netring::netns::within("lab", || netring::Capture::open("veth0"))??;
//! # Ok::<(), netring::Error>(())
//! ```

use std::marker::PhantomData;
use std::os::fd::{AsFd, OwnedFd};

use crate::error::{Error, Result};
use crate::sys;

/// While alive, the current thread is in another network namespace; dropping it moves the thread
/// back. Not `Send`: namespaces are per thread.
///
/// ```no_run
/// let guard = netring::netns::enter("lab")?;
/// let tx = netring::Injector::open("veth0")?; // created in `lab`, stays there
/// drop(guard); // the thread is back in its own namespace
/// # Ok::<(), netring::Error>(())
/// ```
#[derive(Debug)]
pub struct NetnsGuard {
    previous: OwnedFd,
    _not_send: PhantomData<*const ()>,
}

/// Moves the current thread into the namespace `/run/netns/NAME` (or a path, if `name` has a `/`).
/// Needs `CAP_SYS_ADMIN`.
///
/// ```no_run
/// let _guard = netring::netns::enter("/var/run/netns/lab")?;
/// # Ok::<(), netring::Error>(())
/// ```
pub fn enter(name: &str) -> Result<NetnsGuard> {
    let path = if name.contains('/') {
        name.to_owned()
    } else {
        format!("/run/netns/{name}")
    };
    let previous = sys::open_readonly("/proc/thread-self/ns/net")
        .map_err(|e| Error::os("opening the current netns", e))?;
    let target = sys::open_readonly(&path).map_err(|e| match e.raw_os_error() {
        Some(libc::ENOENT) => Error::InvalidConfig(format!(
            "no network namespace at {path}: create it with `ip netns add {name}`"
        )),
        _ => Error::os("opening the netns", e),
    })?;
    sys::setns_net(target.as_fd()).map_err(|e| match e.raw_os_error() {
        Some(libc::EPERM) => Error::PermissionDenied {
            operation: "entering a network namespace (setns)",
            capability: "CAP_SYS_ADMIN",
        },
        _ => Error::os("setns", e),
    })?;
    Ok(NetnsGuard {
        previous,
        _not_send: PhantomData,
    })
}

/// Runs `f` inside the namespace `name`, then moves the thread back.
///
/// ```no_run
/// let idx = netring::netns::within("lab", || netring::Interface::by_name("veth0"))??.index();
/// # Ok::<(), netring::Error>(())
/// ```
pub fn within<T>(name: &str, f: impl FnOnce() -> T) -> Result<T> {
    let _guard = enter(name)?;
    Ok(f())
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        // Failing to return would leave the thread in the wrong namespace: nothing sane remains.
        if let Err(e) = sys::setns_net(self.previous.as_fd()) {
            panic!("could not return to the previous network namespace: {e}");
        }
    }
}
