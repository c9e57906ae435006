//! Interface lookup by name: index, MTU, MAC address, flags.

use crate::error::{Error, Result};
use crate::sys;

/// A network interface as seen when it was looked up.
///
/// ```no_run
/// let lo = netring::Interface::by_name("lo")?;
/// assert!(lo.is_up());
/// println!("{} index={} mtu={}", lo.name(), lo.index(), lo.mtu());
/// # Ok::<(), netring::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Interface {
    name: String,
    index: u32,
    mtu: u32,
    mac: [u8; 6],
    hardware_type: u16,
    flags: u32,
}

impl Interface {
    /// Looks an interface up by name in the calling thread's network namespace.
    ///
    /// Errors with [`Error::NoSuchInterface`] when there is no such interface.
    pub fn by_name(name: &str) -> Result<Self> {
        let no_such = || Error::NoSuchInterface {
            name: name.to_owned(),
        };
        let map = |op: &'static str| {
            move |e: std::io::Error| match e.raw_os_error() {
                Some(libc::ENODEV) | Some(libc::ENXIO) => no_such(),
                _ => Error::os(op, e),
            }
        };
        let index = sys::if_index(name).map_err(map("SIOCGIFINDEX"))?;
        let mtu = sys::if_mtu(name).map_err(map("SIOCGIFMTU"))?;
        let flags = sys::if_flags(name).map_err(map("SIOCGIFFLAGS"))?;
        let (hardware_type, mac) = sys::if_hwaddr(name).map_err(map("SIOCGIFHWADDR"))?;
        Ok(Self {
            name: name.to_owned(),
            index,
            mtu,
            mac,
            hardware_type,
            flags,
        })
    }

    /// Looks an interface up by index.
    pub fn by_index(index: u32) -> Result<Self> {
        let name = sys::if_name(index).ok_or_else(|| Error::NoSuchInterface {
            name: format!("#{index}"),
        })?;
        Self::by_name(&name)
    }

    /// Interface name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Interface index (`ifindex`).
    pub fn index(&self) -> u32 {
        self.index
    }
    /// MTU in bytes (excluding the link-layer header).
    pub fn mtu(&self) -> u32 {
        self.mtu
    }
    /// Hardware (MAC) address.
    pub fn mac(&self) -> [u8; 6] {
        self.mac
    }
    /// ARP hardware type (`ARPHRD_*`; 1 is Ethernet, 772 loopback).
    pub fn hardware_type(&self) -> u16 {
        self.hardware_type
    }
    /// Raw `IFF_*` flags.
    pub fn flags(&self) -> u32 {
        self.flags
    }
    /// `IFF_UP`: administratively up.
    pub fn is_up(&self) -> bool {
        self.flags & libc::IFF_UP as u32 != 0
    }
    /// `IFF_RUNNING`: operationally up (carrier).
    pub fn is_running(&self) -> bool {
        self.flags & libc::IFF_RUNNING as u32 != 0
    }
    /// `IFF_PROMISC`.
    pub fn is_promiscuous(&self) -> bool {
        self.flags & libc::IFF_PROMISC as u32 != 0
    }
    /// `IFF_LOOPBACK`.
    pub fn is_loopback(&self) -> bool {
        self.flags & libc::IFF_LOOPBACK as u32 != 0
    }
}
