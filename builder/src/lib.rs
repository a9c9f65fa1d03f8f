//! The Basalt image builder: manifest in, signed OSTree commit and bootable
//! disk images out.

pub mod apt_sources;
pub mod cleanup;
pub mod cli;
pub mod cmd;
pub mod commit;
pub mod cpio;
pub mod customise;
pub mod deploy;
pub mod disk;
pub mod engine;
pub mod esp;
pub mod hostfiles;
pub mod initramfs;
pub mod manifest;
pub mod ostreeify;
pub mod pipeline;
pub mod progress;
pub mod publish;
pub mod record;
pub mod rootfs;
pub mod update;
pub mod util;
pub mod vm;
