//! The ACPI power button (QEMU's `system_powerdown`) as an evdev device.

use std::fs::{self, File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

const INPUT_CLASS: &str = "/sys/class/input";
const POWER_BUTTON_NAMES: &[&str] = &["Power Button"];
const EV_KEY: u16 = 0x01;
const KEY_POWER: u16 = 116;
/// `struct input_event` on 64-bit: timeval (16 bytes), type, code (u16), value (i32).
const EVENT_SIZE: usize = 24;

/// Finds the power button's event device under `class_dir` (sysfs) and returns its /dev path.
pub fn find_power_button(class_dir: &Path, dev_dir: &Path) -> Option<std::path::PathBuf> {
    let mut names: Vec<_> = fs::read_dir(class_dir)
        .ok()?
        .flatten()
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for n in names {
        let n = n.to_string_lossy().into_owned();
        if !n.starts_with("event") {
            continue;
        }
        let name = fs::read_to_string(class_dir.join(&n).join("device/name")).unwrap_or_default();
        if POWER_BUTTON_NAMES.contains(&name.trim()) {
            return Some(dev_dir.join("input").join(&n));
        }
    }
    None
}

/// Opens the power button nonblocking, if the machine has one.
pub fn open_power_button() -> Option<File> {
    let path = find_power_button(Path::new(INPUT_CLASS), Path::new("/dev"))?;
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
        .ok()
}

/// True when the bytes hold a power key press.
pub fn contains_power_press(buf: &[u8]) -> bool {
    buf.chunks_exact(EVENT_SIZE).any(|ev| {
        let ty = u16::from_ne_bytes([ev[16], ev[17]]);
        let code = u16::from_ne_bytes([ev[18], ev[19]]);
        let value = i32::from_ne_bytes([ev[20], ev[21], ev[22], ev[23]]);
        ty == EV_KEY && code == KEY_POWER && value == 1
    })
}

/// Drains pending events; true when one of them was a press of the power key.
pub fn read_power_press(f: &mut File) -> bool {
    let mut buf = [0u8; EVENT_SIZE * 16];
    let mut pressed = false;
    while let Ok(n) = f.read(&mut buf) {
        if n == 0 {
            break;
        }
        pressed |= contains_power_press(&buf[..n - n % EVENT_SIZE]);
    }
    pressed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(ty: u16, code: u16, value: i32) -> Vec<u8> {
        let mut v = vec![0u8; 16];
        v.extend_from_slice(&ty.to_ne_bytes());
        v.extend_from_slice(&code.to_ne_bytes());
        v.extend_from_slice(&value.to_ne_bytes());
        v
    }

    #[test]
    fn detects_press_not_release() {
        let mut buf = event(EV_KEY, KEY_POWER, 0);
        assert!(!contains_power_press(&buf));
        buf.extend(event(0, 0, 0));
        buf.extend(event(EV_KEY, KEY_POWER, 1));
        assert!(contains_power_press(&buf));
        assert!(!contains_power_press(&event(EV_KEY, 30, 1)));
    }

    #[test]
    fn finds_device_by_name() {
        let d = tempfile::tempdir().unwrap();
        for (ev, name) in [
            ("event0", "AT Translated Set 2 keyboard"),
            ("event1", "Power Button"),
        ] {
            let p = d.path().join(ev).join("device");
            fs::create_dir_all(&p).unwrap();
            fs::write(p.join("name"), format!("{name}\n")).unwrap();
        }
        let found = find_power_button(d.path(), Path::new("/dev")).unwrap();
        assert_eq!(found, Path::new("/dev/input/event1"));
    }
}
