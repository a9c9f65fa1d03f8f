//! Files every Basalt image carries, whatever its manifest: the default
//! service units and the OpenSSH policy. A manifest's `files` can replace any
//! of them (they are written first).

/// (path in the image, contents, mode)
pub const HOST_FILES: &[(&str, &str, u32)] = &[
    (
        "usr/lib/basalt/units/journald.yaml",
        include_str!("../hostfiles/usr/lib/basalt/units/journald.yaml"),
        0o644,
    ),
    (
        "usr/lib/basalt/units/cloud-init.yaml",
        include_str!("../hostfiles/usr/lib/basalt/units/cloud-init.yaml"),
        0o644,
    ),
    (
        "usr/lib/basalt/units/cloud-init-local.yaml",
        include_str!("../hostfiles/usr/lib/basalt/units/cloud-init-local.yaml"),
        0o644,
    ),
    (
        "usr/lib/basalt/units/cloud-final.yaml",
        include_str!("../hostfiles/usr/lib/basalt/units/cloud-final.yaml"),
        0o644,
    ),
    (
        "usr/lib/basalt/units/network.yaml",
        include_str!("../hostfiles/usr/lib/basalt/units/network.yaml"),
        0o644,
    ),
    (
        "usr/lib/basalt/units/sshd-keygen.yaml",
        include_str!("../hostfiles/usr/lib/basalt/units/sshd-keygen.yaml"),
        0o644,
    ),
    (
        "usr/lib/basalt/units/sshd.yaml",
        include_str!("../hostfiles/usr/lib/basalt/units/sshd.yaml"),
        0o644,
    ),
    (
        "usr/lib/basalt/units/chrony.yaml",
        include_str!("../hostfiles/usr/lib/basalt/units/chrony.yaml"),
        0o644,
    ),
    (
        "usr/etc/ssh/sshd_config.d/basalt.conf",
        include_str!("../hostfiles/usr/etc/ssh/sshd_config.d/basalt.conf"),
        0o644,
    ),
];

/// Part of the commit's cache key.
pub fn digest() -> String {
    let mut all = String::new();
    for (p, c, m) in HOST_FILES {
        all.push_str(&format!("{p}\0{m}\0{c}\0"));
    }
    crate::util::sha256_hex(all.as_bytes())
}
