//! VM tests: boot the image that ci/test built once (BASALT_TEST_IMAGE, with
//! its build record BASALT_TEST_RECORD) under QEMU TCG + OVMF.

mod common;

use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use basalt_builder::vm::{copy_with_kernel_args, Vm, VmOpts};
use common::*;

/// One VM at a time: the machine has two cores.
static ONE_VM: Mutex<()> = Mutex::new(());
const READY_TIMEOUT: Duration = Duration::from_secs(90);
const POWEROFF_TIMEOUT: Duration = Duration::from_secs(30);

struct TestImage {
    image: PathBuf,
    record: serde_json::Value,
}

fn test_image(name: &str) -> Option<TestImage> {
    if !slow_tests_enabled(name) {
        return None;
    }
    let image = PathBuf::from(
        std::env::var("BASALT_TEST_IMAGE").expect("BASALT_TEST_IMAGE names the built qcow2"),
    );
    let record =
        std::env::var("BASALT_TEST_RECORD").expect("BASALT_TEST_RECORD names the build record");
    let record = serde_json::from_slice(&std::fs::read(record).unwrap()).unwrap();
    Some(TestImage { image, record })
}

fn console_log(name: &str) -> Option<PathBuf> {
    std::env::var("BASALT_TEST_LOGS").ok().map(|d| {
        std::fs::create_dir_all(&d).unwrap();
        PathBuf::from(d).join(format!("{name}.console.log"))
    })
}

fn boot_with_args(img: &TestImage, name: &str, args: &[&str], dir: &std::path::Path) -> Vm {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    let raw = copy_with_kernel_args(&img.image, dir, &args).unwrap();
    let mut opts = VmOpts::new(raw);
    opts.console_log = console_log(name);
    Vm::start(&opts).unwrap()
}

#[test]
fn boots_to_ready_line_with_the_recorded_commit() {
    let Some(img) = test_image("boots_to_ready_line_with_the_recorded_commit") else {
        return;
    };
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let mut vm = boot_with_args(&img, "ready", &["basalt.test.poweroff"], d.path());
    let (line, secs) = vm.wait_for("ready (commit ", READY_TIMEOUT).unwrap();
    let commit = img.record["commit"].as_str().unwrap();
    let version = img.record["version"].as_str().unwrap();
    assert!(
        line.trim_end()
            .ends_with(&format!("Basalt {version} ready (commit {commit})")),
        "console: {line:?}, record commit {commit}"
    );
    eprintln!("ready line after {secs:.2}s");
    // A clean power off: the final line, then QEMU exits by itself.
    vm.wait_for("Basalt: poweroff now", POWEROFF_TIMEOUT)
        .unwrap();
    vm.wait_exit(POWEROFF_TIMEOUT).unwrap();
    let text = vm.console_text();
    assert!(!text.contains("Kernel panic"), "{text}");
    assert!(!text.contains("basalt-initrd: error"), "{text}");
}

#[test]
fn usr_is_read_only_etc_and_var_are_writable() {
    let Some(img) = test_image("usr_is_read_only_etc_and_var_are_writable") else {
        return;
    };
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let mut vm = boot_with_args(
        &img,
        "fscheck",
        &["basalt.test.fscheck", "basalt.test.poweroff"],
        d.path(),
    );
    let (line, _) = vm.wait_for("basalt-fscheck: usr=", READY_TIMEOUT).unwrap();
    assert!(
        line.ends_with("basalt-fscheck: usr=ro etc=rw var=rw"),
        "{line:?}"
    );
    let (line, _) = vm
        .wait_for("basalt-fscheck: var-persistent=", READY_TIMEOUT)
        .unwrap();
    assert!(line.ends_with("var-persistent=yes"), "{line:?}");
    vm.wait_exit(POWEROFF_TIMEOUT).unwrap();
}

/// /etc and /var live on the disk: the machine-id made on the first boot is
/// still there on the second, which does not make a new one.
#[test]
fn state_persists_across_reboots() {
    let Some(img) = test_image("state_persists_across_reboots") else {
        return;
    };
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let raw =
        copy_with_kernel_args(&img.image, d.path(), &["basalt.test.poweroff".to_string()]).unwrap();
    let mut opts = VmOpts::new(&raw);
    opts.snapshot = false;
    opts.console_log = console_log("persist-1");
    let mut vm = Vm::start(&opts).unwrap();
    let (line, _) = vm.wait_for("generated machine id", READY_TIMEOUT).unwrap();
    let id = line.rsplit(' ').next().unwrap().to_string();
    assert_eq!(id.len(), 32, "{line:?}");
    vm.wait_exit(POWEROFF_TIMEOUT).unwrap();

    opts.console_log = console_log("persist-2");
    let mut vm = Vm::start(&opts).unwrap();
    vm.wait_for("ready (commit ", READY_TIMEOUT).unwrap();
    vm.wait_exit(POWEROFF_TIMEOUT).unwrap();
    let text = vm.console_text();
    assert!(
        !text.contains("generated machine id"),
        "second boot made a new machine id:\n{text}"
    );
}

/// The harness's failure message carries the console tail.
#[test]
fn harness_timeout_shows_console_tail() {
    let Some(img) = test_image("harness_timeout_shows_console_tail") else {
        return;
    };
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let vm = boot_with_args(&img, "timeout", &["basalt.test.poweroff"], d.path());
    let err = vm
        .wait_for("this line never appears", READY_TIMEOUT)
        .unwrap_err()
        .to_string();
    assert!(err.contains("--- console tail ---"), "{err}");
    assert!(err.contains("Basalt: poweroff now"), "{err}");
}

/// The cleanliness check can fail: pulling the plug on a running host
/// leaves the root filesystem's journal needing recovery.
#[test]
fn pulled_plug_leaves_root_fs_needing_recovery() {
    let Some(img) = test_image("pulled_plug_leaves_root_fs_needing_recovery") else {
        return;
    };
    let _one = ONE_VM.lock().unwrap_or_else(|e| e.into_inner());
    let d = tempfile::tempdir().unwrap();
    let raw = copy_with_kernel_args(&img.image, d.path(), &[]).unwrap();
    let mut opts = VmOpts::new(&raw);
    opts.snapshot = false;
    opts.console_log = console_log("pulled-plug");
    let vm = Vm::start(&opts).unwrap();
    vm.wait_for("ready (commit ", READY_TIMEOUT).unwrap();
    drop(vm); // kills QEMU
    let state = basalt_builder::vm::root_fs_state(&raw).unwrap();
    assert!(state.needs_recovery, "{state:?}");
}
