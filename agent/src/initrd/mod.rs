//! The initramfs stage: `/init` until the deployment's `/sbin/init` takes over.
//!
//! Steps, each reported on the console with the path it failed on:
//! mount API filesystems, load kernel modules, find and mount the root
//! filesystem, assemble the ostree deployment ([`prepare_root`]), free the
//! initramfs and switch into the deployment ([`switch_root`]).
//! Any failure powers the machine off after a short pause so a VM test
//! sees it, instead of PID 1 exiting and the kernel panicking.

pub mod ext4;
pub mod gpt;
pub mod modules;
pub mod prepare_root;
pub mod rootdev;
pub mod switch_root;

use std::convert::Infallible;
use std::path::Path;

use anyhow::{Context, Result};

use crate::cmdline::{KernelCmdline, KEY_OSTREE, KEY_ROOT, PROC_CMDLINE};
use crate::console;
use crate::ostree::deployment::Deployment;
use crate::ostree::resolve::resolve_in_root;
use crate::sys::{LinuxSyscall, Syscall};

/// Marker file that identifies the initramfs.
pub const INITRD_RELEASE: &str = "/etc/initrd-release";
/// Prefix of every console line of this stage.
pub const LOG_PREFIX: &str = "basalt-initrd: ";
/// The root filesystem type.
pub const ROOT_FSTYPE: &str = "ext4";

/// Run the initramfs stage. Never returns: it execs the system init or
/// powers off.
pub fn run() -> ! {
    console::set_prefix(LOG_PREFIX);
    match boot(&LinuxSyscall) {
        Ok(never) => match never {},
        Err(err) => {
            console::error(format_args!("boot failed: {err:#}"));
            crate::power::fatal_poweroff()
        }
    }
}

fn boot(sys: &dyn Syscall) -> Result<Infallible> {
    let root = Path::new("/");
    let api_errors = crate::apifs::mount_all(sys, root, &crate::apifs::INITRD_MOUNTS, &[]);
    if let Err(err) = console::attach_to_console() {
        console::warn(format_args!("opening {}: {err}", console::CONSOLE_DEVICE));
    }
    for err in api_errors {
        console::warn(err);
    }
    console::info("starting");

    let cmdline = KernelCmdline::read(Path::new(PROC_CMDLINE))
        .with_context(|| format!("reading {PROC_CMDLINE}"))?;
    load_modules(sys);

    let root_arg = cmdline
        .value(KEY_ROOT)
        .context("no root= on the kernel command line")?;
    let spec = rootdev::RootSpec::parse(root_arg)?;
    let dirs = rootdev::DeviceDirs::system();
    let device = rootdev::wait_for_root_device(sys, &dirs, &spec, rootdev::ROOT_WAIT_TIMEOUT)?;
    let sysroot = root.join(prepare_root::SYSROOT_DIR);
    std::fs::create_dir_all(&sysroot).with_context(|| format!("creating {}", sysroot.display()))?;
    sys.mount(Some(&device), &sysroot, Some(ROOT_FSTYPE), 0, None)
        .with_context(|| {
            format!(
                "mounting {} ({ROOT_FSTYPE}) on {}",
                device.display(),
                sysroot.display()
            )
        })?;
    console::info(format_args!(
        "mounted {} ({spec}) on {}",
        device.display(),
        sysroot.display()
    ));

    let ostree_arg = cmdline
        .value(KEY_OSTREE)
        .context("no ostree= on the kernel command line")?;
    let resolved = resolve_in_root(&sysroot, Path::new(ostree_arg))
        .with_context(|| format!("resolving ostree={ostree_arg} inside {}", sysroot.display()))?;
    let deployment = Deployment::from_path(&resolved)?;
    console::info(format_args!(
        "booting deployment {}",
        deployment.path.display()
    ));

    let staging = prepare_root::prepare_root(sys, root, &deployment)?;
    free_initramfs(root);
    switch_root::switch_root(sys, &staging)?;
    Err(switch_root::exec_system_init())
        .with_context(|| format!("executing {}", switch_root::SYSTEM_INIT))
}

/// Load the builder's module list. Failures are reported, not fatal: the
/// root device may still be usable (drivers built in).
fn load_modules(sys: &dyn Syscall) {
    let list_path = Path::new(modules::MODULE_LIST);
    let names = match std::fs::read_to_string(list_path) {
        Ok(text) => modules::parse_module_list(&text),
        Err(err) => {
            console::warn(format_args!(
                "{}: {err}; loading no modules",
                list_path.display()
            ));
            return;
        }
    };
    let release = match modules::kernel_release() {
        Ok(release) => release,
        Err(err) => {
            console::warn(format_args!("uname: {err}; loading no modules"));
            return;
        }
    };
    let modules_dir = Path::new(modules::MODULES_ROOT).join(release);
    match modules::load_modules(sys, &modules_dir, &names) {
        Ok(report) => {
            for name in &report.missing {
                console::warn(format_args!(
                    "module {name} is not in modules.dep (built into the kernel?)"
                ));
            }
            for failure in &report.failures {
                console::warn(format_args!("loading module {failure}"));
            }
            console::info(format_args!("loaded {} module files", report.loaded));
        }
        Err(err) => console::warn(err),
    }
}

/// Delete the initramfs contents to give their memory back, but only if `/`
/// really is the initramfs. Mount points (the new root) are left alone.
fn free_initramfs(root: &Path) {
    let marker = root.join(INITRD_RELEASE.trim_start_matches('/'));
    match switch_root::is_initramfs(root) {
        Ok(true) if marker.exists() => match switch_root::remove_same_filesystem(root) {
            Ok(0) => {}
            Ok(left) => console::warn(format_args!(
                "{left} initramfs entries could not be removed"
            )),
            Err(err) => console::warn(format_args!("freeing initramfs: {err}")),
        },
        Ok(_) => console::warn("/ is not an initramfs; not freeing it"),
        Err(err) => console::warn(format_args!("statfs /: {err}")),
    }
}
