//! Child processes for the updater (the restart command, `BINARY --version`), started with
//! `posix_spawnp` rather than `std::process`: std's spawn refers to glibc 2.39's
//! `pidfd_spawnp`, so a binary cross-built in a newer Debian build root would need glibc 2.39 at
//! load time, and the image's bookworm glibc (2.36) does not have it. Bounded in time: a child
//! still running at the limit is killed.

use std::ffi::CString;
use std::time::{Duration, Instant};

/// How a child ended.
#[derive(Debug)]
pub struct Finished {
    /// The exit code, `None` when a signal ended it.
    pub code: Option<i32>,
    /// What it wrote to stdout, when asked to capture it.
    pub stdout: Vec<u8>,
}

/// Runs `argv` (looked up in `PATH`) with stdin from /dev/null. With `capture`, stdout is
/// collected and stderr discarded; otherwise both pass through. Killed after `limit`.
pub fn run(argv: &[&str], capture: bool, limit: Duration) -> Result<Finished, String> {
    let args = cstrings(argv.iter().map(|a| a.to_string()))?;
    let env = cstrings(
        std::env::vars_os()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy())),
    )?;
    let Some(program) = args.first() else { return Err("empty command".into()) };
    let mut pipe = [-1; 2];
    if capture && unsafe { libc::pipe2(pipe.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Err(format!("pipe: {}", std::io::Error::last_os_error()));
    }
    let spawned = spawn(program, &args, &env, capture.then_some(pipe[1]));
    if capture {
        unsafe { libc::close(pipe[1]) };
    }
    let pid = match spawned {
        Ok(pid) => pid,
        Err(e) => {
            if capture {
                unsafe { libc::close(pipe[0]) };
            }
            return Err(e);
        }
    };
    let reader = capture.then_some(pipe[0]);
    if let Some(fd) = reader {
        unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
    }
    let result = wait(pid, reader, limit);
    if let Some(fd) = reader {
        unsafe { libc::close(fd) };
    }
    result
}

fn cstrings(items: impl Iterator<Item = String>) -> Result<Vec<CString>, String> {
    items
        .map(|s| CString::new(s).map_err(|_| "an argument contains a NUL byte".to_string()))
        .collect()
}

fn pointers(items: &[CString]) -> Vec<*mut libc::c_char> {
    items
        .iter()
        .map(|c| c.as_ptr() as *mut libc::c_char)
        .chain(std::iter::once(std::ptr::null_mut()))
        .collect()
}

fn spawn(
    program: &CString,
    args: &[CString],
    env: &[CString],
    stdout: Option<i32>,
) -> Result<libc::pid_t, String> {
    let (argv, envp) = (pointers(args), pointers(env));
    let devnull = c"/dev/null";
    let mut pid: libc::pid_t = 0;
    // SAFETY: the file actions are initialised before use and destroyed after; every pointer
    // handed to posix_spawnp points into `args`/`env`, which outlive the call.
    unsafe {
        let mut actions: libc::posix_spawn_file_actions_t = std::mem::zeroed();
        libc::posix_spawn_file_actions_init(&mut actions);
        libc::posix_spawn_file_actions_addopen(
            &mut actions,
            0,
            devnull.as_ptr(),
            libc::O_RDONLY,
            0,
        );
        if let Some(fd) = stdout {
            libc::posix_spawn_file_actions_adddup2(&mut actions, fd, 1);
            libc::posix_spawn_file_actions_addopen(
                &mut actions,
                2,
                devnull.as_ptr(),
                libc::O_WRONLY,
                0,
            );
        }
        let rc = libc::posix_spawnp(
            &mut pid,
            program.as_ptr(),
            &actions,
            std::ptr::null(),
            argv.as_ptr(),
            envp.as_ptr(),
        );
        libc::posix_spawn_file_actions_destroy(&mut actions);
        if rc != 0 {
            return Err(format!(
                "cannot run {}: {}",
                program.to_string_lossy(),
                std::io::Error::from_raw_os_error(rc)
            ));
        }
    }
    Ok(pid)
}

fn drain(fd: i32, out: &mut Vec<u8>) {
    let mut buf = [0u8; 4096];
    loop {
        // SAFETY: reads into a local buffer of the given length from a descriptor we own.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 || out.len() > 1 << 20 {
            return;
        }
        out.extend_from_slice(&buf[..n as usize]);
    }
}

fn wait(pid: libc::pid_t, reader: Option<i32>, limit: Duration) -> Result<Finished, String> {
    let deadline = Instant::now() + limit;
    let mut stdout = Vec::new();
    let mut status = 0;
    loop {
        if let Some(fd) = reader {
            drain(fd, &mut stdout);
        }
        // SAFETY: waits for our own child.
        let rc = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
        if rc == pid {
            break;
        }
        if rc < 0 {
            return Err(format!("waitpid: {}", std::io::Error::last_os_error()));
        }
        if Instant::now() >= deadline {
            // SAFETY: signals and reaps our own child.
            unsafe {
                libc::kill(pid, libc::SIGKILL);
                libc::waitpid(pid, &mut status, 0);
            }
            return Err(format!("did not finish within {} s", limit.as_secs_f64()));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    if let Some(fd) = reader {
        drain(fd, &mut stdout);
    }
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    Ok(Finished { code, stdout })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_output_and_the_time_limit() {
        let ok =
            run(&["sh", "-c", "echo hello; echo noise >&2"], true, Duration::from_secs(5)).unwrap();
        assert_eq!((ok.code, ok.stdout.as_slice()), (Some(0), &b"hello\n"[..]));
        let failed = run(&["sh", "-c", "exit 3"], false, Duration::from_secs(5)).unwrap();
        assert_eq!(failed.code, Some(3));
        let t0 = Instant::now();
        let err = run(&["sleep", "5"], false, Duration::from_millis(200)).unwrap_err();
        assert!(err.contains("did not finish") && t0.elapsed() < Duration::from_secs(3), "{err}");
        assert!(run(&["/nonexistent/program"], false, Duration::from_secs(1)).is_err());
    }
}
