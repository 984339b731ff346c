//! The `convert` step (Glance's `image_conversion`): `qemu-img info` and `qemu-img convert`
//! run as child processes confined by `confine` (CPU time and address space limits, a
//! network namespace of their own with no way out) in the import's work directory, and only
//! on data the inspector found to be of the declared format and safe, which `qemu-img info`
//! must then confirm. What it writes is judged again when the import stores it.

use std::io;
use std::path::{Path, PathBuf};
use std::process::Stdio;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use super::{Data, Limits, TransformError, io_error};
use crate::inspect::{Format, Inspection, Inspector, Refusal};

/// How `convert` runs `qemu-img`, and what it takes.
#[derive(Debug, Clone)]
pub struct QemuImg {
    pub program: PathBuf,
    /// `raw`, `qcow2` or `vmdk`.
    pub output_format: String,
    pub limits: Limits,
    /// The VMDK `createType`s taken.
    pub vmdk_allowed_types: Vec<String>,
    /// GPT safety checks that do not refuse a disk.
    pub gpt_nonfatal: Vec<String>,
}

/// `qemu-img`'s name for a `disk_format`.
fn driver(disk_format: &str) -> &str {
    match disk_format {
        "vhd" => "vpc",
        other => other,
    }
}

impl QemuImg {
    /// Converts `input` into `output`; `None` when it is in the output format already, an
    /// ISO, or not in a `bare` container (Glance's `convert` has nothing to do with those).
    pub(super) async fn convert(
        &self,
        input: &Data,
        output: &Path,
        work: &Path,
    ) -> Result<Option<Data>, TransformError> {
        if input.container_format.as_deref() != Some("bare") {
            return Ok(None);
        }
        let source = input.disk_format.clone().unwrap_or_default();
        let inspection = match &input.inspection {
            Some(known) => known.clone(),
            None => inspect_file(&input.path).await?,
        };
        if !self.take(&inspection, &source)? {
            return Ok(None);
        }
        let info = self
            .run(
                work,
                &["info", "-f", driver(&source), "--output=json"],
                &[&input.path],
            )
            .await?;
        self.confirm(&info, &source)?;
        if source == self.output_format {
            return Ok(None);
        }
        // Made here, so qemu-img only opens it: a child in a user namespace of its own may
        // not create files.
        tokio::fs::File::create(output)
            .await
            .map_err(io_error(format!("creating {}", output.display())))?;
        self.run(
            work,
            &[
                "convert",
                "-f",
                driver(&source),
                "-O",
                driver(&self.output_format),
            ],
            &[&input.path, output],
        )
        .await?;
        tracing::info!(from = %source, to = %self.output_format, "image data converted");
        Ok(Some(Data {
            path: output.to_path_buf(),
            disk_format: Some(self.output_format.clone()),
            container_format: Some("bare".into()),
            inspection: None,
        }))
    }

    /// Whether the inspected data is converted (an ISO is kept as it is), or why not.
    fn take(&self, inspection: &Inspection, source: &str) -> Result<bool, TransformError> {
        let disallowed = || TransformError::Refused("Image has disallowed configuration".into());
        match &inspection.refusal {
            Some(Refusal::Unsafe(failures))
                if !(inspection.format == Format::Gpt
                    && failures
                        .iter()
                        .all(|(name, _)| self.gpt_nonfatal.contains(name))) =>
            {
                return Err(disallowed());
            }
            Some(Refusal::Ambiguous(_) | Refusal::Incomplete) => {
                return Err(TransformError::Refused(
                    "Image format detection failed".into(),
                ));
            }
            _ => {}
        }
        // Glance takes a GPT disk as raw.
        let detected = match inspection.format {
            Format::Gpt => Format::Raw,
            other => other,
        };
        match detected {
            Format::Iso if source == "iso" => return Ok(false),
            Format::Iso => return Err(disallowed()),
            _ if detected.name() != source => {
                return Err(TransformError::Refused("Image format mismatch".into()));
            }
            _ => {}
        }
        if detected == Format::Vmdk && !self.vmdk_type_allowed(inspection.subformat.as_deref()) {
            return Err(TransformError::Refused(
                "Invalid VMDK create-type specified".into(),
            ));
        }
        Ok(true)
    }

    fn vmdk_type_allowed(&self, create_type: Option<&str>) -> bool {
        create_type.is_some_and(|t| {
            self.vmdk_allowed_types
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(t))
        })
    }

    /// What `qemu-img info` says must agree with the inspector: the same format, no backing
    /// file, no external data file, an allowed VMDK type.
    fn confirm(&self, info: &[u8], source: &str) -> Result<(), TransformError> {
        let info: Value = serde_json::from_slice(info)
            .map_err(|e| TransformError::Qemu(format!("qemu-img info gave no JSON: {e}")))?;
        if info["format"].as_str() != Some(driver(source)) {
            return Err(TransformError::Refused(
                "Image metadata disagrees about format".into(),
            ));
        }
        if info.get("backing-filename").is_some() {
            return Err(TransformError::Refused(
                "QCOW images with backing files are not allowed".into(),
            ));
        }
        let specific = &info["format-specific"]["data"];
        if !specific["data-file"].is_null() {
            return Err(TransformError::Refused(
                "QCOW images with data-file set are not allowed".into(),
            ));
        }
        if source == "vmdk" && !self.vmdk_type_allowed(specific["create-type"].as_str()) {
            return Err(TransformError::Refused(
                "Invalid VMDK create-type specified".into(),
            ));
        }
        Ok(())
    }

    /// Runs `qemu-img args paths…` confined, in `work`; its standard output, or why it
    /// failed. Dropping the future kills the child.
    async fn run(
        &self,
        work: &Path,
        args: &[&str],
        paths: &[&Path],
    ) -> Result<Vec<u8>, TransformError> {
        let mut command = tokio::process::Command::new(&self.program);
        command
            .args(args)
            .args(paths)
            .current_dir(work)
            .env("TMPDIR", work)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true);
        let limits = self.limits;
        // SAFETY: `confine` makes only system calls (no allocation, no lock), as a child
        // between fork and exec may.
        unsafe {
            command.pre_exec(move || confine(limits));
        }
        let done = command
            .output()
            .await
            .map_err(io_error(format!("running {}", self.program.display())))?;
        if done.status.success() {
            return Ok(done.stdout);
        }
        let stderr = String::from_utf8_lossy(&done.stderr);
        let why = match std::os::unix::process::ExitStatusExt::signal(&done.status) {
            Some(signal) => format!(
                "stopped by signal {signal} (limits: {} s of CPU time, {} bytes of address \
                 space)",
                limits.cpu_time.as_secs(),
                limits.address_space
            ),
            None => format!("{}: {}", done.status, stderr.trim()),
        };
        Err(TransformError::Qemu(format!("{} {why}", args[0])))
    }
}

/// In the child, before `exec`: death with its parent, the resource limits, and a network
/// namespace of its own (as root directly; otherwise inside a user namespace of its own, which the service's
/// unit allows with `RestrictNamespaces=user net`). Failing any of them fails the spawn:
/// qemu-img never runs unconfined.
fn confine(limits: Limits) -> io::Result<()> {
    use rustix::process::{Resource, Rlimit, Signal, set_parent_process_death_signal, setrlimit};
    use rustix::thread::{UnshareFlags, unshare_unsafe};
    // Dies with glint's thread that started it: one a crash left behind would go on
    // writing into the work directory the import's next attempt uses.
    set_parent_process_death_signal(Some(Signal::KILL))?;
    let cpu = limits.cpu_time.as_secs().max(1);
    setrlimit(
        Resource::Cpu,
        Rlimit {
            current: Some(cpu),
            maximum: Some(cpu),
        },
    )?;
    setrlimit(
        Resource::As,
        Rlimit {
            current: Some(limits.address_space),
            maximum: Some(limits.address_space),
        },
    )?;
    // SAFETY: new network and user namespaces change nothing this process's memory
    // depends on (the unsafety of `unshare` is that of unsharing file tables).
    unsafe {
        if unshare_unsafe(UnshareFlags::NEWNET).is_err() {
            unshare_unsafe(UnshareFlags::NEWUSER | UnshareFlags::NEWNET)?;
        }
    }
    Ok(())
}

/// The inspector over the whole file, on a blocking thread that stops when the future is
/// dropped.
async fn inspect_file(path: &Path) -> Result<Inspection, TransformError> {
    let (path, cancel) = (path.to_path_buf(), CancellationToken::new());
    let _stop = cancel.clone().drop_guard();
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file =
            std::fs::File::open(&path).map_err(io_error(format!("opening {}", path.display())))?;
        let mut inspector = Inspector::new();
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            if cancel.is_cancelled() {
                return Err(TransformError::Cancelled);
            }
            match file.read(&mut buffer) {
                Ok(0) => return Ok(inspector.finish()),
                Ok(n) => inspector.feed(&buffer[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(io_error(format!("reading {}", path.display()))(e)),
            }
        }
    })
    .await
    .map_err(|e| io_error("inspection")(io::Error::other(e)))?
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn confined(program: &str, cpu_time: Duration, address_space: u64) -> QemuImg {
        QemuImg {
            program: program.into(),
            output_format: "raw".into(),
            limits: Limits {
                cpu_time,
                address_space,
            },
            vmdk_allowed_types: Vec::new(),
            gpt_nonfatal: Vec::new(),
        }
    }

    async fn python(child: &QemuImg, code: &str) -> Result<Vec<u8>, TransformError> {
        let work = tempfile::tempdir().expect("tempdir");
        child.run(work.path(), &["-c", code], &[]).await
    }

    #[tokio::test]
    async fn the_child_reaches_no_network_and_lives_within_its_limits() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let roomy = confined("python3", Duration::from_secs(60), 1 << 30);
        let reached = python(
            &roomy,
            &format!(
                "import socket\ntry:\n  socket.create_connection(('127.0.0.1', {port}), 2)\n  \
                 print('reached')\nexcept OSError as e:\n  print('cut off:', e)"
            ),
        )
        .await
        .expect("runs");
        let said = String::from_utf8_lossy(&reached);
        assert!(said.starts_with("cut off"), "{said}");

        let small = confined("python3", Duration::from_secs(60), 256 << 20);
        let grown = python(&small, "bytearray(512 << 20)").await;
        assert!(matches!(grown, Err(TransformError::Qemu(m)) if m.contains("MemoryError")));

        let brief = confined("python3", Duration::from_secs(1), 1 << 30);
        let spun = python(&brief, "while True: pass").await;
        assert!(
            matches!(&spun, Err(TransformError::Qemu(m)) if m.contains("stopped by signal")),
            "{spun:?}"
        );
    }
}
