//! Everything that runs on a Basalt host.
//!
//! One binary plays three roles, picked by [`cli::run`]:
//! - `/init` in the initramfs ([`initrd`]): load modules, mount the root
//!   filesystem, set up the ostree deployment and switch into it;
//! - `/sbin/init`, PID 1 of the booted system ([`init`]);
//! - the `basaltctl` command line tool.

pub mod apifs;
pub mod bless;
pub mod cli;
pub mod cloudinit;
pub mod cmdline;
pub mod console;
pub mod control;
pub mod enginecli;
pub mod failedboot;
pub mod fsutil;
pub mod init;
pub mod initrd;
pub mod journal;
pub mod journald;
pub mod mountinfo;
pub mod netlink;
pub mod osrelease;
pub mod ostree;
pub mod passwd;
pub mod power;
pub mod service;
pub mod sys;
pub mod updatecli;
