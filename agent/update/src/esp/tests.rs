use super::*;

fn wanted(csum: &str, kernel: &str) -> WantedEntry {
    let deployment = format!("/ostree/deploy/basalt/deploy/{csum}.0");
    WantedEntry {
        title: format!("Basalt {csum}"),
        linux: format!("/ostree/basalt-{kernel}/vmlinuz-6.1"),
        initrd: format!("/ostree/basalt-{kernel}/initramfs-6.1.img"),
        options: with_ostree_arg(
            "root=LABEL=basalt-root ostree=/ostree/boot.1/x/0",
            &deployment,
        ),
        id: format!("{csum}-0"),
        deployment,
    }
}

fn fake_boot(sysroot: &Path, kernel: &str) {
    let dir = sysroot.join(format!("boot/ostree/basalt-{kernel}"));
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("vmlinuz-6.1"), kernel).unwrap();
    fs::write(dir.join("initramfs-6.1.img"), kernel).unwrap();
}

fn names(esp: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(esp.join(ENTRIES_DIR))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn entry_states_from_names() {
    assert_eq!(
        EspEntry::parse("basalt-1.conf", "").state(),
        EntryState::Blessed
    );
    assert_eq!(
        EspEntry::parse("basalt-1+2-1.conf", "").state(),
        EntryState::Counting { left: 2, done: 1 }
    );
    assert_eq!(
        EspEntry::parse("basalt-1+0-3.conf", "").state(),
        EntryState::Bad { done: 3 }
    );
}

#[test]
fn new_default_outranks_the_rest_and_unused_files_go() {
    let d = tempfile::tempdir().unwrap();
    let (sysroot, esp) = (d.path().join("sysroot"), d.path().join("esp"));
    fake_boot(&sysroot, "k1");
    fake_boot(&sysroot, "k2");
    fs::create_dir_all(esp.join(ENTRIES_DIR)).unwrap();
    fs::write(esp.join("loader/loader.conf"), "timeout 0\n").unwrap();

    let (a, b) = (wanted("aaa", "k1"), wanted("bbb", "k2"));
    let mut e = Esp::read(&esp).unwrap();
    e.apply(&sysroot, std::slice::from_ref(&a)).unwrap();
    e.apply(&sysroot, &[b.clone(), a.clone()]).unwrap();
    assert_eq!(names(&esp), ["basalt-aaa-0+3.conf", "basalt-bbb-0+3.conf"]);
    let e = Esp::read(&esp).unwrap();
    assert_eq!(e.entries[0].ostree_arg(), Some(b.deployment.as_str()));
    assert!(e.entries[0].generation() > e.entries[1].generation());
    assert!(esp.join("ostree/basalt-k2/vmlinuz-6.1").is_file());

    // Rolling back promotes the old entry; dropping it removes its kernel.
    let mut e = Esp::read(&esp).unwrap();
    e.apply(&sysroot, &[a.clone(), b.clone()]).unwrap();
    let e2 = Esp::read(&esp).unwrap();
    assert_eq!(e2.entries[0].ostree_arg(), Some(a.deployment.as_str()));
    let mut e = Esp::read(&esp).unwrap();
    e.apply(&sysroot, std::slice::from_ref(&a)).unwrap();
    assert_eq!(names(&esp), ["basalt-aaa-0+3.conf"]);
    assert!(!esp.join("ostree/basalt-k2").exists());
    assert!(esp.join("ostree/basalt-k1/initramfs-6.1.img").is_file());
}

#[test]
fn legacy_entry_is_pinned_to_its_deployment() {
    let d = tempfile::tempdir().unwrap();
    let (sysroot, esp) = (d.path().join("sysroot"), d.path().join("esp"));
    fs::create_dir_all(sysroot.join("ostree/deploy/basalt/deploy/ccc.0")).unwrap();
    fs::create_dir_all(sysroot.join("ostree/boot.1.1/basalt/bc")).unwrap();
    std::os::unix::fs::symlink("boot.1.1", sysroot.join("ostree/boot.1")).unwrap();
    std::os::unix::fs::symlink(
        "../../../deploy/basalt/deploy/ccc.0",
        sysroot.join("ostree/boot.1.1/basalt/bc/0"),
    )
    .unwrap();
    fs::create_dir_all(esp.join(ENTRIES_DIR)).unwrap();
    fs::write(
        esp.join("loader/entries/basalt-1.conf"),
        "title t\nversion 0.1.0\noptions root=x ostree=/ostree/boot.1/basalt/bc/0\n",
    )
    .unwrap();
    let mut e = Esp::read(&esp).unwrap();
    e.pin_legacy_entries(&sysroot).unwrap();
    let text = fs::read_to_string(esp.join("loader/entries/basalt-1.conf")).unwrap();
    assert!(
        text.contains("options root=x ostree=/ostree/deploy/basalt/deploy/ccc.0\n"),
        "{text}"
    );
}
