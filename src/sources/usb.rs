//! The `usb` source: a vendor-class USB RNG (e.g. Quantis USB, 0aba:0102) read over its bulk IN
//! endpoint with libusb (rusb, built from source).
//!
//! The endpoint is discovered from the configuration descriptor of the chosen interface (never
//! hard-coded: an emulated gadget came up as 0x81, real devices differ). After any error the
//! handle is dropped and the next fetch looks the device up again, so unplugging and replugging
//! recovers by itself. Reads block, so they run on tokio's blocking pool, one at a time.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rusb::UsbContext;

use super::{FetchFuture, Meta, Source, SourceError};
use crate::config::UsbConfig;
use crate::secret::SecretBytes;

/// One endpoint as the descriptors describe it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EndpointInfo {
    pub interface: u8,
    pub alt_setting: u8,
    pub address: u8,
    pub bulk: bool,
    pub max_packet: u16,
}

/// The bulk IN endpoint of `interface`, preferring the lowest alternate setting.
pub fn find_bulk_in(eps: &[EndpointInfo], interface: u8) -> Option<EndpointInfo> {
    eps.iter()
        .filter(|e| e.interface == interface && e.bulk && e.address & 0x80 != 0 && e.max_packet > 0)
        .min_by_key(|e| (e.alt_setting, e.address))
        .copied()
}

/// Every endpoint of a configuration descriptor.
fn endpoints(cfg: &rusb::ConfigDescriptor) -> Vec<EndpointInfo> {
    let mut out = Vec::new();
    for iface in cfg.interfaces() {
        for d in iface.descriptors() {
            for e in d.endpoint_descriptors() {
                out.push(EndpointInfo {
                    interface: d.interface_number(),
                    alt_setting: d.setting_number(),
                    address: e.address(),
                    bulk: e.transfer_type() == rusb::TransferType::Bulk,
                    max_packet: e.max_packet_size() & 0x7ff,
                });
            }
        }
    }
    out
}

struct Open {
    handle: rusb::DeviceHandle<rusb::Context>,
    ep: EndpointInfo,
}

struct Inner {
    cfg: UsbConfig,
    open: Mutex<Option<Open>>,
}

/// A USB RNG with a bulk IN endpoint.
pub struct UsbSource {
    meta: Meta,
    inner: Arc<Inner>,
    timeout: Duration,
}

impl std::fmt::Debug for UsbSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "UsbSource {{ id: {:?}, device: {:04x}:{:04x} }}",
            self.meta.id, self.inner.cfg.vendor_id, self.inner.cfg.product_id
        )
    }
}

fn unavailable(what: &str, e: rusb::Error) -> SourceError {
    SourceError::Unavailable(format!("USB {what}: {e}"))
}

impl Inner {
    fn open(&self) -> Result<Open, SourceError> {
        let c = &self.cfg;
        let ctx = rusb::Context::new().map_err(|e| unavailable("init", e))?;
        let devices = ctx.devices().map_err(|e| unavailable("device list", e))?;
        for dev in devices.iter() {
            let Ok(desc) = dev.device_descriptor() else {
                continue;
            };
            if desc.vendor_id() != c.vendor_id || desc.product_id() != c.product_id {
                continue;
            }
            let handle = dev.open().map_err(|e| unavailable("open", e))?;
            if let Some(want) = &c.serial {
                let got = handle
                    .read_serial_number_string_ascii(&desc)
                    .unwrap_or_default();
                if &got != want {
                    continue;
                }
            }
            let cfg = dev
                .active_config_descriptor()
                .map_err(|e| unavailable("config descriptor", e))?;
            let ep = find_bulk_in(&endpoints(&cfg), c.interface).ok_or_else(|| {
                SourceError::Unavailable(format!(
                    "USB {:04x}:{:04x} has no bulk IN endpoint on interface {}",
                    c.vendor_id, c.product_id, c.interface
                ))
            })?;
            // Not supported on every platform; claiming below reports what matters.
            let _ = handle.set_auto_detach_kernel_driver(true);
            handle
                .claim_interface(ep.interface)
                .map_err(|e| unavailable("claim interface", e))?;
            if ep.alt_setting != 0 {
                handle
                    .set_alternate_setting(ep.interface, ep.alt_setting)
                    .map_err(|e| unavailable("alternate setting", e))?;
            }
            tracing::info!(
                vid = c.vendor_id,
                pid = c.product_id,
                endpoint = ep.address,
                "USB RNG opened"
            );
            return Ok(Open { handle, ep });
        }
        Err(SourceError::Unavailable(format!(
            "no USB device {:04x}:{:04x}{}",
            c.vendor_id,
            c.product_id,
            if c.serial.is_some() {
                " with that serial"
            } else {
                ""
            }
        )))
    }

    fn fill(&self, out: &mut [u8], deadline: Instant) -> Result<(), SourceError> {
        let mut guard = super::try_lock(&self.open, "USB read")?;
        if guard.is_none() {
            *guard = Some(self.open()?);
        }
        let Some(o) = guard.as_ref() else {
            return Err(SourceError::Failed("no USB handle".into()));
        };
        let mp = usize::from(o.ep.max_packet);
        let mut buf = SecretBytes::zeroed(self.cfg.chunk_bytes.div_ceil(mp) * mp);
        let mut filled = 0;
        while filled < out.len() {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(SourceError::Timeout(Duration::ZERO));
            }
            match o.handle.read_bulk(o.ep.address, buf.expose_mut(), left) {
                Ok(got) => {
                    let take = got.min(out.len() - filled);
                    out[filled..filled + take].copy_from_slice(&buf.expose()[..take]);
                    filled += take;
                }
                Err(rusb::Error::Timeout) => continue,
                Err(e) => {
                    // Gone or broken: look the device up again next time.
                    *guard = None;
                    return Err(unavailable("read", e));
                }
            }
        }
        Ok(())
    }
}

impl UsbSource {
    pub fn new(meta: Meta, cfg: &UsbConfig, timeout: Duration) -> Self {
        Self {
            meta,
            inner: Arc::new(Inner {
                cfg: cfg.clone(),
                open: Mutex::new(None),
            }),
            timeout,
        }
    }
}

impl Source for UsbSource {
    fn meta(&self) -> &Meta {
        &self.meta
    }
    fn fetch(&self, n: usize) -> FetchFuture<'_> {
        let inner = self.inner.clone();
        super::fetch_blocking_within(n, "USB", self.timeout, move |buf, deadline| {
            inner.fill(buf, deadline)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(interface: u8, alt: u8, address: u8, bulk: bool) -> EndpointInfo {
        EndpointInfo {
            interface,
            alt_setting: alt,
            address,
            bulk,
            max_packet: 512,
        }
    }

    #[test]
    fn finds_the_bulk_in_endpoint_of_the_interface() {
        // A FunctionFS gadget: one bulk IN at 0x81 (what the VM showed).
        assert_eq!(
            find_bulk_in(&[ep(0, 0, 0x81, true)], 0).unwrap().address,
            0x81
        );
        // OUT endpoints, interrupt endpoints and other interfaces are ignored.
        let eps = [
            ep(0, 0, 0x02, true),
            ep(0, 0, 0x83, false),
            ep(1, 0, 0x84, true),
            ep(0, 0, 0x86, true),
        ];
        assert_eq!(find_bulk_in(&eps, 0).unwrap().address, 0x86);
        assert_eq!(find_bulk_in(&eps, 1).unwrap().address, 0x84);
        assert_eq!(find_bulk_in(&eps, 2), None);
        // The lowest alternate setting wins; zero-size endpoints are unusable.
        let eps = [ep(0, 1, 0x81, true), ep(0, 0, 0x82, true)];
        assert_eq!(find_bulk_in(&eps, 0).unwrap().address, 0x82);
        let mut zero = ep(0, 0, 0x81, true);
        zero.max_packet = 0;
        assert_eq!(find_bulk_in(&[zero], 0), None);
        assert_eq!(find_bulk_in(&[ep(0, 0, 0x01, true)], 0), None);
    }
}
