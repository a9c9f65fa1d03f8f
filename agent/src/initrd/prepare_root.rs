//! Assemble the deployment as the future `/`, like `ostree-prepare-root`.
//!
//! The deployment is bind-mounted to a staging directory in the initramfs
//! (not onto itself: the physical root could then not be moved below it,
//! the kernel refuses to move a mount beneath itself with `ELOOP`):
//!
//! 1. bind `<sysroot>/<deployment>` to `<staging>`;
//! 2. bind the stateroot's `var` to `<staging>/var`;
//! 3. bind `<staging>/usr` to itself and make it read-only;
//! 4. move the physical root `<sysroot>` to `<staging>/sysroot`;
//! 5. move `/proc`, `/sys`, `/dev` and `/run` into `<staging>`;
//! 6. record the booted deployment in `<staging>/run/basalt/booted`.

use std::io;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::ostree::booted::{BootedDeployment, BOOTED_FILE};
use crate::ostree::deployment::Deployment;
use crate::sys::Syscall;

/// Mount point of the physical root filesystem in the initramfs.
pub const SYSROOT_DIR: &str = "sysroot";
/// Where the deployment is assembled before it becomes `/`.
pub const STAGING_DIR: &str = "sysroot.tmp";
/// API filesystems carried over into the new root.
pub const MOVED_API_MOUNTS: [&str; 4] = ["proc", "sys", "dev", "run"];

#[derive(Debug, Error)]
#[error("{step} {path}: {source}")]
pub struct PrepareRootError {
    pub step: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: io::Error,
}

fn step<T>(step: &'static str, path: &Path, result: io::Result<T>) -> Result<T, PrepareRootError> {
    result.map_err(|source| PrepareRootError {
        step,
        path: path.to_path_buf(),
        source,
    })
}

/// Join an absolute path below `base`.
fn below(base: &Path, path: &Path) -> PathBuf {
    base.join(path.strip_prefix("/").unwrap_or(path))
}

/// Run steps 1-6 with the initramfs root at `root` (`/` when booting).
/// Returns the staging directory, ready to become `/`.
pub fn prepare_root(
    sys: &dyn Syscall,
    root: &Path,
    deployment: &Deployment,
) -> Result<PathBuf, PrepareRootError> {
    let sysroot = root.join(SYSROOT_DIR);
    let staging = root.join(STAGING_DIR);
    let deploy_dir = below(&sysroot, &deployment.path);
    let bind = libc::MS_BIND;

    step("creating", &staging, std::fs::create_dir_all(&staging))?;
    step(
        "bind-mounting deployment to",
        &staging,
        sys.mount(Some(&deploy_dir), &staging, None, bind, None),
    )?;

    let var_source = below(&sysroot, &deployment.stateroot_var());
    step(
        "checking stateroot var",
        &var_source,
        std::fs::metadata(&var_source),
    )?;
    let var_target = staging.join("var");
    step(
        "creating",
        &var_target,
        std::fs::create_dir_all(&var_target),
    )?;
    step(
        "bind-mounting stateroot var to",
        &var_target,
        sys.mount(Some(&var_source), &var_target, None, bind, None),
    )?;

    let usr = staging.join("usr");
    step(
        "bind-mounting",
        &usr,
        sys.mount(Some(&usr), &usr, None, bind, None),
    )?;
    step(
        "remounting read-only",
        &usr,
        sys.mount(
            None,
            &usr,
            None,
            bind | libc::MS_REMOUNT | libc::MS_RDONLY,
            None,
        ),
    )?;

    let sysroot_target = staging.join(SYSROOT_DIR);
    step(
        "creating",
        &sysroot_target,
        std::fs::create_dir_all(&sysroot_target),
    )?;
    step(
        "moving physical root to",
        &sysroot_target,
        sys.mount(Some(&sysroot), &sysroot_target, None, libc::MS_MOVE, None),
    )?;

    for api in MOVED_API_MOUNTS {
        let target = staging.join(api);
        step("creating", &target, std::fs::create_dir_all(&target))?;
        step(
            "moving API filesystem to",
            &target,
            sys.mount(Some(&root.join(api)), &target, None, libc::MS_MOVE, None),
        )?;
    }

    let booted_path = below(&staging, Path::new(BOOTED_FILE));
    let contents = BootedDeployment::from(deployment).to_file_contents();
    step(
        "writing",
        &booted_path,
        booted_path
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|()| std::fs::write(&booted_path, contents)),
    )?;
    Ok(staging)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sys::recording::{Call, RecordingSyscall};

    const DEPLOY: &str = "/ostree/deploy/basalt/deploy/abc.0";

    fn mount(source: Option<PathBuf>, target: PathBuf, flags: libc::c_ulong) -> Call {
        Call::Mount {
            source,
            target,
            fstype: None,
            flags,
        }
    }

    #[test]
    fn issues_mounts_in_order_and_writes_booted_file() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        std::fs::create_dir_all(r.join("sysroot/ostree/deploy/basalt/var")).unwrap();
        std::fs::create_dir_all(r.join("sysroot").join(&DEPLOY[1..])).unwrap();
        let deployment = Deployment::from_path(Path::new(DEPLOY)).unwrap();
        let sys = RecordingSyscall::default();

        let staging = prepare_root(&sys, r, &deployment).unwrap();

        let s = r.join(STAGING_DIR);
        assert_eq!(staging, s);
        let mut expected = vec![
            mount(
                Some(r.join("sysroot").join(&DEPLOY[1..])),
                s.clone(),
                libc::MS_BIND,
            ),
            mount(
                Some(r.join("sysroot/ostree/deploy/basalt/var")),
                s.join("var"),
                libc::MS_BIND,
            ),
            mount(Some(s.join("usr")), s.join("usr"), libc::MS_BIND),
            mount(
                None,
                s.join("usr"),
                libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
            ),
            mount(Some(r.join("sysroot")), s.join("sysroot"), libc::MS_MOVE),
        ];
        for api in MOVED_API_MOUNTS {
            expected.push(mount(Some(r.join(api)), s.join(api), libc::MS_MOVE));
        }
        assert_eq!(sys.calls(), expected);
        assert_eq!(
            std::fs::read_to_string(s.join("run/basalt/booted")).unwrap(),
            "commit=abc\ndeployment=/ostree/deploy/basalt/deploy/abc.0\nstateroot=basalt\n"
        );
    }

    #[test]
    fn missing_stateroot_var_is_reported_with_path() {
        let root = tempfile::tempdir().unwrap();
        let deployment = Deployment::from_path(Path::new(DEPLOY)).unwrap();
        let err = prepare_root(&RecordingSyscall::default(), root.path(), &deployment).unwrap_err();
        assert_eq!(err.step, "checking stateroot var");
        assert!(err.path.ends_with("sysroot/ostree/deploy/basalt/var"));
    }
}
