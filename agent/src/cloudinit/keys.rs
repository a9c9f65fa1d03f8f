//! The shapes of cloud-config's documented keys, as [`super::schema`]
//! checks them. Keys cloud-init knows but Basalt does not act on are
//! listed as [`Shape::Any`] so that they are not reported as unknown;
//! [`super::modules`] says what happens to them.

/// What a value may look like.
#[derive(Debug)]
pub enum Shape {
    Any,
    Str,
    Bool,
    Int,
    Null,
    /// A string from a fixed set.
    Enum(&'static [&'static str]),
    List(&'static Shape),
    /// A mapping with known keys; other keys are warnings.
    Object(&'static [Field]),
    /// A mapping with free keys whose values have one shape.
    Map(&'static Shape),
    OneOf(&'static [Shape]),
}

#[derive(Debug)]
pub struct Field {
    pub name: &'static str,
    pub shape: Shape,
    pub required: bool,
}

const fn opt(name: &'static str, shape: Shape) -> Field {
    Field {
        name,
        shape,
        required: false,
    }
}

const fn req(name: &'static str, shape: Shape) -> Field {
    Field {
        name,
        shape,
        required: true,
    }
}

const STR_LIST: Shape = Shape::List(&Shape::Str);
const STR_OR_LIST: Shape = Shape::OneOf(&[Shape::Str, Shape::List(&Shape::Str)]);
/// A command: a shell string or an argv list.
const COMMAND: Shape = Shape::OneOf(&[Shape::Str, Shape::List(&Shape::Str)]);

/// The encodings `write_files` accepts.
pub const WRITE_FILES_ENCODINGS: &[&str] = &[
    "gz",
    "gzip",
    "gz+base64",
    "gzip+base64",
    "gz+b64",
    "gzip+b64",
    "b64",
    "base64",
    "text/plain",
];

/// Restart policies of `containers:` entries.
pub const CONTAINER_RESTART: &[&str] = &["no", "always", "on-failure", "unless-stopped"];

const USER: Shape = Shape::Object(&[
    opt("name", Shape::Str),
    opt("gecos", Shape::Str),
    opt("groups", STR_OR_LIST),
    opt("primary_group", Shape::Str),
    opt("shell", Shape::Str),
    opt(
        "sudo",
        Shape::OneOf(&[
            Shape::Str,
            Shape::List(&Shape::Str),
            Shape::Bool,
            Shape::Null,
        ]),
    ),
    opt("doas", STR_LIST),
    opt("lock_passwd", Shape::Bool),
    opt("passwd", Shape::Str),
    opt("hashed_passwd", Shape::Str),
    opt("plain_text_passwd", Shape::Str),
    opt("ssh_authorized_keys", STR_LIST),
    opt("ssh_import_id", STR_LIST),
    opt("ssh_redirect_user", Shape::Bool),
    opt("uid", Shape::OneOf(&[Shape::Int, Shape::Str])),
    opt("system", Shape::Bool),
    opt("homedir", Shape::Str),
    opt("no_create_home", Shape::Bool),
    opt("no_user_group", Shape::Bool),
    opt("create_groups", Shape::Bool),
    opt("expiredate", Shape::Str),
    opt("inactive", Shape::Str),
    opt("selinux_user", Shape::Str),
    opt("snapuser", Shape::Str),
    opt("default", Shape::Bool),
]);

const WRITE_FILE: Shape = Shape::Object(&[
    req("path", Shape::Str),
    opt("content", Shape::Str),
    opt("source", Shape::Any),
    opt("owner", Shape::Str),
    opt("permissions", Shape::OneOf(&[Shape::Str, Shape::Int])),
    opt("encoding", Shape::Enum(WRITE_FILES_ENCODINGS)),
    opt("append", Shape::Bool),
    opt("defer", Shape::Bool),
]);

const CONTAINER: Shape = Shape::Object(&[
    req("name", Shape::Str),
    req("image", Shape::Str),
    opt("command", COMMAND),
    opt(
        "env",
        Shape::OneOf(&[
            Shape::Map(&Shape::OneOf(&[Shape::Str, Shape::Int, Shape::Bool])),
            Shape::List(&Shape::Str),
        ]),
    ),
    opt(
        "ports",
        Shape::List(&Shape::OneOf(&[Shape::Str, Shape::Int])),
    ),
    opt("volumes", STR_LIST),
    opt("restart", Shape::Enum(CONTAINER_RESTART)),
]);

/// Every top-level key cloud-config may have.
pub const TOP_LEVEL: Shape = Shape::Object(&[
    // hostname
    opt("hostname", Shape::Str),
    opt("fqdn", Shape::Str),
    opt("preserve_hostname", Shape::Bool),
    opt("prefer_fqdn_over_hostname", Shape::Bool),
    opt("create_hostname_file", Shape::Bool),
    opt(
        "manage_etc_hosts",
        Shape::OneOf(&[Shape::Bool, Shape::Enum(&["template", "localhost"])]),
    ),
    // users and groups
    opt(
        "users",
        Shape::OneOf(&[
            Shape::Str,
            Shape::List(&Shape::OneOf(&[Shape::Str, USER])),
            Shape::Map(&Shape::Any),
        ]),
    ),
    opt("user", Shape::OneOf(&[Shape::Str, USER])),
    opt(
        "groups",
        Shape::OneOf(&[
            Shape::Str,
            Shape::List(&Shape::OneOf(&[Shape::Str, Shape::Map(&STR_OR_LIST)])),
            Shape::Map(&Shape::OneOf(&[Shape::Str, STR_LIST, Shape::Null])),
        ]),
    ),
    // ssh
    opt("ssh_authorized_keys", STR_LIST),
    opt("ssh_pwauth", Shape::OneOf(&[Shape::Bool, Shape::Str])),
    opt("disable_root", Shape::Bool),
    opt("disable_root_opts", Shape::Str),
    opt("allow_public_ssh_keys", Shape::Bool),
    opt("ssh_keys", Shape::Map(&Shape::Str)),
    opt("ssh_deletekeys", Shape::Bool),
    opt("ssh_genkeytypes", STR_LIST),
    opt("ssh_quiet_keygen", Shape::Bool),
    opt("ssh_publish_hostkeys", Shape::Any),
    opt("ssh_import_id", STR_LIST),
    opt("no_ssh_fingerprints", Shape::Bool),
    opt("authkey_hash", Shape::Str),
    opt("ssh_fp_console_blacklist", STR_LIST),
    opt("ssh_key_console_blacklist", STR_LIST),
    opt("password", Shape::Str),
    opt(
        "chpasswd",
        Shape::Object(&[
            opt("expire", Shape::Bool),
            opt(
                "users",
                Shape::List(&Shape::Object(&[
                    req("name", Shape::Str),
                    opt("password", Shape::Str),
                    opt("type", Shape::Enum(&["hash", "text", "RANDOM"])),
                ])),
            ),
            opt("list", STR_OR_LIST),
        ]),
    ),
    // files and commands
    opt("write_files", Shape::List(&WRITE_FILE)),
    opt("bootcmd", Shape::List(&COMMAND)),
    opt("runcmd", Shape::List(&COMMAND)),
    // time
    opt("timezone", Shape::Str),
    opt(
        "ntp",
        Shape::OneOf(&[
            Shape::Null,
            Shape::Object(&[
                opt("enabled", Shape::Bool),
                opt("ntp_client", Shape::Str),
                opt("servers", STR_LIST),
                opt("pools", STR_LIST),
                opt("peers", STR_LIST),
                opt("allow", STR_LIST),
                opt("config", Shape::Any),
            ]),
        ]),
    ),
    // storage
    opt(
        "mounts",
        Shape::List(&Shape::List(&Shape::OneOf(&[
            Shape::Str,
            Shape::Int,
            Shape::Null,
        ]))),
    ),
    opt(
        "mount_default_fields",
        Shape::List(&Shape::OneOf(&[Shape::Str, Shape::Int, Shape::Null])),
    ),
    opt("swap", Shape::Any),
    opt(
        "growpart",
        Shape::Object(&[
            opt(
                "mode",
                Shape::OneOf(&[
                    Shape::Enum(&["auto", "growpart", "gpart", "off"]),
                    Shape::Bool,
                ]),
            ),
            opt("devices", STR_LIST),
            opt("ignore_growroot_disabled", Shape::Bool),
        ]),
    ),
    opt(
        "resize_rootfs",
        Shape::OneOf(&[Shape::Bool, Shape::Enum(&["noblock"])]),
    ),
    // packages: warned about, never run
    opt("packages", Shape::List(&Shape::Any)),
    opt("package_update", Shape::Bool),
    opt("package_upgrade", Shape::Bool),
    opt("package_reboot_if_required", Shape::Bool),
    opt("apt", Shape::Any),
    opt("snap", Shape::Any),
    opt("yum_repos", Shape::Any),
    opt("zypper", Shape::Any),
    opt("apk_repos", Shape::Any),
    // Basalt
    opt("containers", Shape::List(&CONTAINER)),
    // merging
    opt("merge_how", Shape::Any),
    opt("merge_type", Shape::Any),
    // known to cloud-init, not acted on by Basalt
    opt("final_message", Shape::Str),
    opt("power_state", Shape::Any),
    opt("phone_home", Shape::Any),
    opt("locale", Shape::OneOf(&[Shape::Bool, Shape::Str])),
    opt("locale_configfile", Shape::Str),
    opt("keyboard", Shape::Any),
    opt("ca_certs", Shape::Any),
    opt("ca-certs", Shape::Any),
    opt("rsyslog", Shape::Any),
    opt("disk_setup", Shape::Any),
    opt("fs_setup", Shape::Any),
    opt("device_aliases", Shape::Any),
    opt("random_seed", Shape::Any),
    opt("ansible", Shape::Any),
    opt("chef", Shape::Any),
    opt("puppet", Shape::Any),
    opt("salt_minion", Shape::Any),
    opt("landscape", Shape::Any),
    opt("lxd", Shape::Any),
    opt("mcollective", Shape::Any),
    opt("ubuntu_pro", Shape::Any),
    opt("ubuntu_advantage", Shape::Any),
    opt("byobu_by_default", Shape::Any),
    opt("wireguard", Shape::Any),
    opt("seed_random", Shape::Any),
    opt("output", Shape::Any),
    opt("reporting", Shape::Any),
    opt("network", Shape::Any),
    opt("datasource", Shape::Any),
    opt("datasource_list", Shape::Any),
    opt("system_info", Shape::Any),
    opt("cloud_init_modules", Shape::Any),
    opt("cloud_config_modules", Shape::Any),
    opt("cloud_final_modules", Shape::Any),
    opt("vendor_data", Shape::Any),
    opt("manual_cache_clean", Shape::Bool),
]);

/// Package-management keys: meaningless on an image-based host.
pub const PACKAGE_KEYS: &[&str] = &[
    "packages",
    "package_update",
    "package_upgrade",
    "package_reboot_if_required",
    "apt",
    "snap",
    "yum_repos",
    "zypper",
    "apk_repos",
];

/// Keys cloud-init acts on that Basalt does not (one warning each).
pub const UNSUPPORTED_KEYS: &[&str] = &[
    "power_state",
    "phone_home",
    "final_message",
    "locale",
    "keyboard",
    "ca_certs",
    "ca-certs",
    "rsyslog",
    "disk_setup",
    "fs_setup",
    "swap",
    "random_seed",
    "ansible",
    "chef",
    "puppet",
    "salt_minion",
    "landscape",
    "lxd",
    "mcollective",
    "ubuntu_pro",
    "ubuntu_advantage",
    "byobu_by_default",
    "wireguard",
    "seed_random",
    "ssh_import_id",
];

/// The fields of an object shape.
pub fn fields(shape: &Shape) -> &'static [Field] {
    match shape {
        Shape::Object(fields) => fields,
        _ => &[],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_package_key_is_known_and_names_are_unique() {
        let top = fields(&TOP_LEVEL);
        for key in PACKAGE_KEYS.iter().chain(UNSUPPORTED_KEYS) {
            assert!(top.iter().any(|f| f.name == *key), "{key}");
        }
        let mut names: Vec<&str> = top.iter().map(|f| f.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(before, names.len());
    }
}
