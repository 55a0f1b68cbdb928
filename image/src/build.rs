//! `edgeward image build`: from the operator's keys, the agent binary, the appliance kernel (built
//! from Debian's kernel source; or Debian's signed kernel and its modules) and systemd-stub 252,
//! to a bootable disk, an OVMF variable store with the keys enrolled, and a manifest of the PCR
//! values a device booting it will quote, signed by the release key.
//!
//! No step mounts anything or needs a loop device; every output depends only on the inputs, so
//! building twice gives the same UKI and manifest.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;

use edgeward_bootchain::predict::{fold, predict_events, PredictError, SecureBootKeys};
use flate2::{Compression, GzBuilder};
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};
use thiserror::Error;

use crate::cpio::Archive;
use crate::elf::{module_dependencies, runtime_closure, ElfError};
use crate::kernel::KernelError;
use crate::keys::{parse_guid, KeyDir, KeyError};
use crate::manifest::{sign_manifest, ManifestError};
use crate::tool::{apt_download, apt_field, apt_version, io, run, IoError, ToolError};

#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BuildError {
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error(transparent)]
    Elf(#[from] ElfError),
    #[error("cannot predict the PCRs of the image: {0}")]
    Predict(#[from] PredictError),
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    #[error(transparent)]
    Kernel(#[from] KernelError),
    #[error(transparent)]
    Io(#[from] IoError),
    #[error("{0}")]
    Input(String),
}

fn read(path: &Path) -> Result<Vec<u8>, BuildError> {
    Ok(io(
        format!("cannot read {}", path.display()),
        std::fs::read(path),
    )?)
}

fn write(path: &Path, bytes: &[u8]) -> Result<(), BuildError> {
    Ok(io(
        format!("cannot write {}", path.display()),
        std::fs::write(path, bytes),
    )?)
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// Where the kernel comes from.
#[derive(Debug, Clone)]
pub enum KernelSource {
    /// The appliance's own kernel, built from this Debian kernel source package with
    /// `image/kernel/appliance.config`: everything built in, no modules (decision 0030).
    Appliance { package: String },
    /// Debian's signed kernel, resolved through this (meta-)package and fetched with apt; its
    /// drivers are modules, which `BuildOptions::modules` names.
    Apt { package: String },
    /// An already extracted kernel package (a directory with `boot/` and `lib/modules/`).
    Extracted { root: PathBuf, version: String },
}

/// The modules an image with Debian's kernel loads: storage and its file systems (ext4 asks
/// for crc32c through the crypto API, which no module dependency names), the network, and the
/// power button's input device.
pub const DEBIAN_KERNEL_MODULES: [&str; 13] = [
    "virtio_pci",
    "virtio_blk",
    "dm_verity",
    "crc32c_generic",
    // Workload images: a loop device over the bundle, dm-verity over that, erofs on top
    // (after crc32c_generic: erofs needs libcrc32c, which asks the crypto API for crc32c).
    "loop",
    "erofs",
    "ext4",
    "vfat",
    "nls_cp437",
    "nls_ascii",
    "virtio_net",
    "button",
    "evdev",
];

/// Everything the build reads.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub keys: PathBuf,
    pub out: PathBuf,
    /// The `edgeward-agent` binary that becomes `/init`.
    pub agent: PathBuf,
    /// Downloaded packages are kept here between builds.
    pub cache: PathBuf,
    pub kernel: KernelSource,
    /// systemd-boot-efi 252's `linuxx64.efi.stub`.
    pub stub: PathBuf,
    /// The OVMF variable store template the keys are enrolled into.
    pub ovmf_vars: PathBuf,
    pub cmdline: String,
    pub image_version: String,
    /// Kernel modules to ship and load at boot, by name; their dependencies come along. Empty
    /// for the appliance kernel, which has none.
    pub modules: Vec<String>,
    /// Shared libraries the agent opens at run time rather than links (so no DT_NEEDED names
    /// them): tpm2-tss loads its TCTI module with dlopen.
    pub runtime_libraries: Vec<String>,
    /// virt-firmware's `virt-fw-vars`, which enrols the keys.
    pub virt_fw_vars: PathBuf,
    /// The data partition's size in MiB.
    pub data_mib: u64,
    /// The ESP's size in MiB at least (it holds the UKI, the device configuration and the
    /// workload bundles); the UKI's size and a margin if that is more.
    pub esp_mib: u64,
}

impl BuildOptions {
    pub fn defaults(keys: PathBuf, out: PathBuf, agent: PathBuf, cache: PathBuf) -> Self {
        Self {
            keys,
            out,
            agent,
            cache,
            kernel: KernelSource::Appliance {
                package: crate::kernel::SOURCE_PACKAGE.into(),
            },
            stub: "/usr/lib/systemd/boot/efi/linuxx64.efi.stub".into(),
            ovmf_vars: "/usr/share/OVMF/OVMF_VARS_4M.fd".into(),
            // loglevel=4: the kernel's errors reach the console (an operator's only log before
            // the network is up; dm-verity names a corrupted root block there), nothing less.
            cmdline: "console=ttyS0 quiet loglevel=4 panic=-1".into(),
            image_version: "0.1.0".into(),
            modules: Vec::new(),
            runtime_libraries: vec!["libtss2-tcti-device.so.0".into()],
            virt_fw_vars: "virt-fw-vars".into(),
            data_mib: 2048,
            esp_mib: 64,
        }
    }

    /// Debian's signed generic kernel instead of the appliance's, with the modules the
    /// appliance needs from it (for hardware the appliance kernel has no driver for).
    pub fn with_debian_kernel(mut self) -> Self {
        self.kernel = KernelSource::Apt {
            package: "linux-image-amd64".into(),
        };
        self.modules = DEBIAN_KERNEL_MODULES.map(String::from).to_vec();
        self
    }
}

/// What was built.
#[derive(Debug, Clone)]
pub struct BuildReport {
    pub manifest: Value,
    pub uki_bytes: u64,
}

struct Kernel {
    package: String,
    version: String,
    release: String,
    vmlinuz: PathBuf,
    /// The extracted package whose `lib/modules/RELEASE` holds the modules; none for the
    /// appliance kernel.
    modules_root: Option<PathBuf>,
    /// The appliance kernel's final `.config`, recorded in the manifest.
    config_sha256: Option<String>,
}

fn fetch_kernel(
    options: &BuildOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<Kernel, BuildError> {
    let (root, package, version) = match &options.kernel {
        KernelSource::Appliance { package } => {
            let built = crate::kernel::appliance_kernel(&options.cache, package, progress)?;
            let config = read(&built.config)?;
            return Ok(Kernel {
                package: built.package,
                version: built.version,
                release: built.release,
                vmlinuz: built.vmlinuz,
                modules_root: None,
                config_sha256: Some(sha256_hex(&config)),
            });
        }
        KernelSource::Extracted { root, version } => {
            (root.clone(), "local".to_owned(), version.clone())
        }
        KernelSource::Apt { package } => {
            let depends = run(
                Command::new("apt-cache").args([
                    "depends",
                    "--no-recommends",
                    "--no-suggests",
                    package,
                ]),
                "apt, on Debian",
            )?;
            // The meta-package depends on the versioned image package.
            let real = apt_field(&depends, "Depends:")
                .filter(|name| name.starts_with("linux-image-"))
                .unwrap_or_else(|| package.clone());
            let version = apt_version(&real)?;
            let root = options
                .cache
                .join("kernel")
                .join(format!("{real}_{version}"));
            if !root.join("boot").is_dir() {
                let deb = apt_download(&real, &version, &options.cache.join("download"))?;
                let partial = options
                    .cache
                    .join("kernel")
                    .join(format!("{real}_{version}.partial"));
                let _ = std::fs::remove_dir_all(&partial);
                io(
                    "cannot create the kernel cache",
                    std::fs::create_dir_all(&partial),
                )?;
                run(
                    Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&partial),
                    "dpkg",
                )?;
                io(
                    "cannot move the extracted kernel into the cache",
                    std::fs::rename(&partial, &root),
                )?;
                let _ = std::fs::remove_file(&deb);
            }
            (root, real, version)
        }
    };
    let modules = root.join("lib/modules");
    let release = io(
        format!("cannot read {}", modules.display()),
        std::fs::read_dir(&modules),
    )?
    .filter_map(Result::ok)
    .map(|entry| entry.file_name().to_string_lossy().into_owned())
    .next()
    .ok_or_else(|| BuildError::Input(format!("{} holds no kernel release", modules.display())))?;
    Ok(Kernel {
        package,
        version,
        vmlinuz: root.join("boot").join(format!("vmlinuz-{release}")),
        release,
        modules_root: Some(root),
        config_sha256: None,
    })
}

/// Module name → path, for every module of the kernel.
fn module_index(dir: &Path) -> Result<BTreeMap<String, PathBuf>, BuildError> {
    let mut index = BTreeMap::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(dir) = stack.pop() {
        for entry in io(
            format!("cannot read {}", dir.display()),
            std::fs::read_dir(&dir),
        )? {
            let path = io("cannot read a module directory", entry)?.path();
            if path.is_dir() {
                stack.push(path);
            } else if let Some(name) = path
                .file_name()
                .and_then(|name| name.to_str())
                .and_then(|name| name.strip_suffix(".ko"))
            {
                index.insert(name.replace('-', "_"), path);
            }
        }
    }
    Ok(index)
}

/// The modules to load, dependencies first.
fn module_order(
    wanted: &[String],
    index: &BTreeMap<String, PathBuf>,
) -> Result<Vec<PathBuf>, BuildError> {
    fn visit(
        name: &str,
        index: &BTreeMap<String, PathBuf>,
        seen: &mut BTreeSet<String>,
        order: &mut Vec<PathBuf>,
    ) -> Result<(), BuildError> {
        let name = name.replace('-', "_");
        if !seen.insert(name.clone()) {
            return Ok(());
        }
        let path = index
            .get(&name)
            .ok_or_else(|| BuildError::Input(format!("the kernel has no module {name}")))?;
        for dependency in module_dependencies(path)? {
            visit(&dependency, index, seen, order)?;
        }
        order.push(path.clone());
        Ok(())
    }
    let mut seen = BTreeSet::new();
    let mut order = Vec::new();
    for name in wanted {
        visit(name, index, &mut seen, &mut order)?;
    }
    Ok(order)
}

/// The root file tree: the agent as `/init`, the libraries it links and opens, the kernel
/// modules it loads (Debian's kernel only), the configuration key, the mount points; and the
/// number of modules.
fn root_archive(
    options: &BuildOptions,
    kernel: &Kernel,
    work: &Path,
    config_key: &str,
    workload_key: &str,
) -> Result<(Archive, usize), BuildError> {
    let mut archive = Archive::new();
    for dir in ["dev", "proc", "sys", "run", "tmp", "var/lib/edgeward"] {
        archive.directory(dir);
    }
    // The root may be read-only: the agent writes resolv.conf into the tmpfs on /run.
    archive.symlink("etc/resolv.conf", "/run/resolv.conf");
    // Symbols and debug information serve no one on the device and double the UKI.
    let stripped = work.join("init");
    run(
        Command::new("strip")
            .arg("--strip-all")
            .arg("-o")
            .arg(&stripped)
            .arg(&options.agent),
        "binutils",
    )?;
    archive.file("init", read(&stripped)?, true);
    let mut libraries = runtime_closure(&options.agent)?;
    for name in &options.runtime_libraries {
        let found = crate::elf::LIBRARY_DIRS
            .iter()
            .map(|dir| Path::new(dir).join(name))
            .find(|path| path.is_file())
            .ok_or_else(|| BuildError::Input(format!("runtime library {name} is not installed")))?;
        libraries.extend(runtime_closure(&found)?);
        libraries.insert(found);
    }
    for library in libraries {
        let path = library.to_string_lossy().trim_start_matches('/').to_owned();
        if !archive.contains(&path) {
            archive.file(&path, read(&library)?, true);
        }
    }
    let order = match &kernel.modules_root {
        Some(root) => {
            let index = module_index(&root.join("lib/modules").join(&kernel.release).join("kernel"))?;
            module_order(&options.modules, &index)?
        }
        None if options.modules.is_empty() => Vec::new(),
        None => {
            return Err(BuildError::Input(format!(
                "the appliance kernel has no modules (what it needs is built in: image/kernel/appliance.config); \
                 {} asked for: use Debian's kernel (--kernel debian) to load modules",
                options.modules.join(", ")
            )))
        }
    };
    let mut list = String::new();
    for module in &order {
        let relative = module
            .strip_prefix(kernel.modules_root.as_deref().unwrap_or(Path::new("/")))
            .map_err(|_| BuildError::Input("module outside the kernel tree".into()))?;
        let path = relative.to_string_lossy().into_owned();
        archive.file(&path, read(module)?, false);
        list.push('/');
        list.push_str(&path);
        list.push('\n');
    }
    archive.file("etc/edgeward/modules", list.into_bytes(), false);
    // The trust anchor for device configurations, part of what the boot measures (the verity
    // root's hash on the command line, or the initrd: PCRs 4, 9 and 11), so an appliance obeys
    // only configurations its operator signed.
    archive.file(
        CONFIG_KEY_PATH,
        format!("{config_key}\n").into_bytes(),
        false,
    );
    // The trust anchor for workload bundles, measured the same way: the appliance runs only
    // bundles signed with the workload key.
    archive.file(WORKLOAD_KEY_PATH, workload_key.as_bytes().to_vec(), false);
    Ok((archive, order.len()))
}

/// The tree as a gzip-compressed initramfs.
fn initramfs(archive: &Archive) -> Result<Vec<u8>, BuildError> {
    let cpio = archive.to_bytes();
    let mut encoder = GzBuilder::new().write(Vec::new(), Compression::best());
    io(
        "cannot compress the initramfs",
        std::io::Write::write_all(&mut encoder, &cpio),
    )?;
    Ok(io("cannot compress the initramfs", encoder.finish())?)
}

/// Gives objcopy's output the stub's own COFF timestamp and a zero checksum: objcopy stamps the
/// current time, which would make every build's UKI, and so PCR 4, different.
fn normalize_pe_header(image: &mut [u8], stub: &[u8]) -> Result<(), BuildError> {
    let bad = || BuildError::Input("objcopy produced no PE image".into());
    let pe = u32::from_le_bytes(
        image
            .get(0x3C..0x40)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    ) as usize;
    let timestamp = pe + 8;
    let checksum = pe + 4 + 20 + 64;
    let original = stub.get(timestamp..timestamp + 4).ok_or_else(bad)?.to_vec();
    image
        .get_mut(timestamp..timestamp + 4)
        .ok_or_else(bad)?
        .copy_from_slice(&original);
    image
        .get_mut(checksum..checksum + 4)
        .ok_or_else(bad)?
        .fill(0);
    Ok(())
}

/// Drops the COFF symbol table that Debian's stub still carries at its end: objcopy would move
/// it behind the new sections, where Authenticode hashes it as trailing data.
fn strip_coff_symbols(mut stub: Vec<u8>) -> Result<Vec<u8>, BuildError> {
    let bad = || BuildError::Input("the stub is not a PE image".into());
    let pe = u32::from_le_bytes(
        stub.get(0x3C..0x40)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    ) as usize;
    let coff = pe + 4;
    let pointer_field = coff + 8;
    let pointer = u32::from_le_bytes(
        stub.get(pointer_field..pointer_field + 4)
            .ok_or_else(bad)?
            .try_into()
            .map_err(|_| bad())?,
    ) as usize;
    if pointer == 0 {
        return Ok(stub);
    }
    stub[pointer_field..pointer_field + 8].fill(0);
    if pointer < stub.len() {
        stub.truncate(pointer);
    }
    Ok(stub)
}

fn uki(
    options: &BuildOptions,
    work: &Path,
    vmlinuz: &Path,
    initrd: Option<&Path>,
    osrel: &Path,
    cmdline: &Path,
) -> Result<Vec<u8>, BuildError> {
    let stub = work.join("stub.efi");
    let stub_bytes = strip_coff_symbols(read(&options.stub)?)?;
    write(&stub, &stub_bytes)?;
    // Kept beside the signed one: re-signing with another db key starts from it.
    let unsigned = options.out.join("uki.unsigned.efi");
    let _ = std::fs::remove_file(&unsigned);
    let section = |name: &str, path: &Path| format!("{name}={}", path.display());
    let mut objcopy = Command::new("objcopy");
    objcopy
        .arg("--add-section")
        .arg(section(".osrel", osrel))
        .args(["--change-section-vma", ".osrel=0x20000"])
        .arg("--add-section")
        .arg(section(".cmdline", cmdline))
        .args(["--change-section-vma", ".cmdline=0x30000"])
        .arg("--add-section")
        .arg(section(".linux", vmlinuz))
        .args(["--change-section-vma", ".linux=0x2000000"]);
    if let Some(initrd) = initrd {
        objcopy
            .arg("--add-section")
            .arg(section(".initrd", initrd))
            .args(["--change-section-vma", ".initrd=0x3000000"]);
    }
    run(objcopy.arg(&stub).arg(&unsigned), "binutils")?;
    let mut image = read(&unsigned)?;
    normalize_pe_header(&mut image, &stub_bytes)?;
    write(&unsigned, &image)?;
    let keys = KeyDir::new(&options.keys);
    let signed = options.out.join("uki.efi");
    let _ = std::fs::remove_file(&signed);
    // sbsign puts the current time in the signature's signingTime attribute; under libfaketime
    // at a fixed instant the signed UKI is byte-for-byte reproducible.
    run(
        Command::new("faketime")
            .args(["-f", "2025-01-01 00:00:00", "sbsign"])
            .arg("--key")
            .arg(keys.private_key("db"))
            .arg("--cert")
            .arg(keys.certificate("db"))
            .arg("--output")
            .arg(&signed)
            .arg(&unsigned),
        "faketime and sbsigntool",
    )?;
    read(&signed)
}

pub(crate) const MIB: u64 = 1024 * 1024;

fn disk(
    options: &BuildOptions,
    work: &Path,
    signed_uki: &Path,
    uki_len: u64,
    root: Option<&Path>,
) -> Result<(), BuildError> {
    let esp_mib = ((uki_len * 5 / 4) / MIB + 8).max(options.esp_mib);
    let esp = work.join("esp.img");
    let _ = std::fs::remove_file(&esp);
    let fixed_time = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_735_689_600);
    let file = io(
        "cannot open the UKI",
        std::fs::File::options().write(true).open(signed_uki),
    )?;
    io("cannot set the UKI's time", file.set_modified(fixed_time))?;
    drop(file);
    run(
        Command::new("mkfs.vfat")
            .args(["--invariant", "-i", "ED6E4A4D", "-n", "EDGEWARD", "-C"])
            .arg(&esp)
            .arg((esp_mib * 1024).to_string()),
        "dosfstools",
    )?;
    let mtools = |args: &[&str]| {
        let mut command = Command::new(args[0]);
        command
            .args(&args[1..])
            .env("MTOOLS_SKIP_CHECK", "1")
            .env("SOURCE_DATE_EPOCH", "1735689600");
        command
    };
    let esp_arg = esp.to_string_lossy().into_owned();
    run(
        &mut mtools(&["mmd", "-i", &esp_arg, "::EFI", "::EFI/BOOT"]),
        "mtools",
    )?;
    run(
        mtools(&["mcopy", "-m", "-i", &esp_arg])
            .arg(signed_uki)
            .arg("::EFI/BOOT/BOOTX64.EFI"),
        "mtools",
    )?;
    let data_mib = options.data_mib;
    let root_mib = match root {
        Some(root) => {
            let len = io("cannot read the root partition", std::fs::metadata(root))?.len();
            len.div_ceil(MIB)
        }
        None => 0,
    };
    let total = (1 + esp_mib + root_mib + data_mib + 1) * MIB;
    let disk = options.out.join("disk.img");
    let file = io("cannot create disk.img", std::fs::File::create(&disk))?;
    io("cannot size disk.img", file.set_len(total))?;
    drop(file);
    // Fixed GUIDs: the GPT is measured into PCR 5 and the disk should not differ between builds.
    let root_start = 2048 + esp_mib * MIB / 512;
    let root_line = if root.is_some() {
        format!(
            "start={root_start}, size={}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid={}, name=\"edgeward-root\"\n",
            root_mib * MIB / 512,
            crate::rootfs::ROOT_PARTUUID.to_ascii_uppercase(),
        )
    } else {
        String::new()
    };
    let script = format!(
        "label: gpt\nlabel-id: 6D0F2C1E-0B3A-4E5B-9A77-45DC0E1D2A01\nunit: sectors\nfirst-lba: 2048\n\
         start=2048, size={esp}, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B, uuid=6D0F2C1E-0B3A-4E5B-9A77-45DC0E1D2A02, name=\"esp\"\n\
         {root_line}\
         start={data_start}, size={data}, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4, uuid=6D0F2C1E-0B3A-4E5B-9A77-45DC0E1D2A03, name=\"edgeward-data\"\n",
        esp = esp_mib * MIB / 512,
        data_start = root_start + root_mib * MIB / 512,
        data = data_mib * MIB / 512,
    );
    let mut child = io(
        "cannot run sfdisk",
        Command::new("sfdisk")
            .args(["--no-reread", "--no-tell-kernel", "--quiet"])
            .arg(&disk)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn(),
    )?;
    if let Some(mut stdin) = child.stdin.take() {
        io(
            "cannot write the partition table script",
            std::io::Write::write_all(&mut stdin, script.as_bytes()),
        )?;
    }
    let output = io("sfdisk failed", child.wait_with_output())?;
    if !output.status.success() {
        return Err(BuildError::Tool(ToolError::Failed {
            command: format!("sfdisk {}", disk.display()),
            status: output.status.to_string(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }));
    }
    place(&disk, MIB, &esp, "the ESP")?;
    if let Some(root) = root {
        place(&disk, (1 + esp_mib) * MIB, root, "the root partition")?;
    }
    let data = data_partition(work, data_mib)?;
    place(
        &disk,
        (1 + esp_mib + root_mib) * MIB,
        &data,
        "the data partition",
    )?;
    Ok(())
}

/// Copies the file system image `part` into `disk` at `offset`, leaving runs of zeros as holes
/// so that the disk stays sparse.
fn place(disk: &Path, offset: u64, part: &Path, what: &str) -> Result<(), BuildError> {
    use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
    let context = format!("cannot place {what} in {}", disk.display());
    let mut target = io(
        context.clone(),
        std::fs::File::options().write(true).open(disk),
    )?;
    let mut source = io(context.clone(), std::fs::File::open(part))?;
    let mut chunk = vec![0u8; MIB as usize];
    let mut position = offset;
    loop {
        let read = io(context.clone(), source.read(&mut chunk))?;
        if read == 0 {
            return Ok(());
        }
        if chunk[..read].iter().any(|byte| *byte != 0) {
            io(context.clone(), target.seek(SeekFrom::Start(position)))?;
            io(context.clone(), target.write_all(&chunk[..read]))?;
        }
        position += read as u64;
    }
}

/// The data partition's ext4 file system, made here so that the device never formats a disk:
/// an appliance that finds no file system of ours stops rather than erase what it cannot read.
/// The UUID, hash seed and times are fixed, so that builds are reproducible.
fn data_partition(work: &Path, data_mib: u64) -> Result<PathBuf, BuildError> {
    let image = work.join("data.img");
    let _ = std::fs::remove_file(&image);
    run(
        Command::new("mke2fs")
            .args(["-q", "-F", "-t", "ext4", "-L", "edgeward-data"])
            .args(["-U", "6d0f2c1e-0b3a-4e5b-9a77-45dc0e1d2a04"])
            .args([
                "-E",
                "hash_seed=6d0f2c1e-0b3a-4e5b-9a77-45dc0e1d2a05,root_owner=0:0",
            ])
            .env("E2FSPROGS_FAKE_TIME", "1735689600")
            .arg(&image)
            .arg(format!("{data_mib}M")),
        "e2fsprogs",
    )?;
    Ok(image)
}

fn ovmf_vars(options: &BuildOptions, keys: &KeyDir, owner: &str) -> Result<(), BuildError> {
    let out = options.out.join("OVMF_VARS.fd");
    let auth = options.out.join("auth");
    let _ = std::fs::remove_file(&out);
    io(
        "cannot create the auth directory",
        std::fs::create_dir_all(&auth),
    )?;
    run(
        Command::new(&options.virt_fw_vars)
            .arg("--input")
            .arg(&options.ovmf_vars)
            .arg("--set-pk")
            .arg(owner)
            .arg(keys.certificate("PK"))
            .arg("--add-kek")
            .arg(owner)
            .arg(keys.certificate("KEK"))
            .arg("--add-db")
            .arg(owner)
            .arg(keys.certificate("db"))
            .arg("--secure-boot")
            .arg("--output")
            .arg(&out)
            .arg("--output-auth")
            .arg(&auth),
        "virt-firmware from PyPI (scripts/setup installs it into .venv)",
    )?;
    Ok(())
}

fn package_version(package: &str) -> String {
    Command::new("dpkg-query")
        .args(["-W", "-f", "${Version}", package])
        .output()
        .ok()
        .filter(|output| output.status.success())
        .map(|output| String::from_utf8_lossy(&output.stdout).into_owned())
        .unwrap_or_else(|| "unknown".into())
}

/// Where the image keeps the public key that device configurations must be signed with.
pub const CONFIG_KEY_PATH: &str = "etc/edgeward/config.pub.raw";
/// Where the workload key's public half (PEM) is in the appliance's root.
pub const WORKLOAD_KEY_PATH: &str = "etc/edgeward/workload.pub";

/// Builds the image into `options.out`, reporting each stage through `progress`.
pub fn build(
    options: &BuildOptions,
    mut progress: impl FnMut(&str),
) -> Result<BuildReport, BuildError> {
    let keys = KeyDir::new(&options.keys);
    keys.check()?;
    let owner = keys.owner_guid()?;
    io(
        format!("cannot create {}", options.out.display()),
        std::fs::create_dir_all(&options.out),
    )?;
    let work = options.out.join("work");
    io(
        "cannot create the work directory",
        std::fs::create_dir_all(&work),
    )?;

    progress(match options.kernel {
        KernelSource::Appliance { .. } => "kernel: the appliance kernel (built once, then cached)",
        KernelSource::Apt { .. } => "kernel: resolving and fetching Debian's signed kernel",
        KernelSource::Extracted { .. } => "kernel: an extracted kernel package",
    });
    let kernel = fetch_kernel(options, &mut progress)?;
    let vmlinuz = kernel.vmlinuz.clone();
    progress(&format!(
        "kernel: {} {} ({})",
        kernel.package, kernel.version, kernel.release
    ));

    let config_key = {
        use ring::signature::KeyPair as _;
        hex::encode(keys.config_key()?.public_key().as_ref())
    };
    write(
        &options.out.join("config.pub.raw"),
        format!("{config_key}\n").as_bytes(),
    )?;
    let workload_key = String::from_utf8_lossy(&read(&keys.public_key("workload"))?).into_owned();
    write(&options.out.join("workload.pub"), workload_key.as_bytes())?;
    let (archive, module_count) =
        root_archive(options, &kernel, &work, &config_key, &workload_key)?;
    // A kernel with everything built in makes the root's verity device itself; one that loads
    // its drivers as modules (Debian's) needs them from an initramfs, so the root goes there.
    let (initrd, root) = if kernel.modules_root.is_none() {
        progress("root: agent as /init, its libraries, the configuration key: erofs + dm-verity");
        let root = crate::rootfs::build(&archive, &work)?;
        progress(&format!(
            "root: {} data blocks, root hash {}",
            root.tree.data_blocks(),
            root.tree.root()
        ));
        (None, Some(root))
    } else {
        progress("initramfs: agent as /init, its libraries, kernel modules, the configuration key");
        let bytes = initramfs(&archive)?;
        let path = work.join("initrd.cpio.gz");
        write(&path, &bytes)?;
        progress(&format!(
            "initramfs: {} bytes, {module_count} modules",
            bytes.len()
        ));
        (Some((path, bytes)), None)
    };
    let cmdline_text = match &root {
        Some(root) => format!("{} {}", options.cmdline, root.kernel_parameters()),
        None => options.cmdline.clone(),
    };

    progress(if initrd.is_some() {
        "uki: stub + .osrel .cmdline .linux .initrd, signed with db"
    } else {
        "uki: stub + .osrel .cmdline .linux, signed with db"
    });
    let osrel = work.join("os-release");
    write(
        &osrel,
        format!(
            "NAME=\"Edgeward\"\nID=edgeward\nPRETTY_NAME=\"Edgeward {version}\"\nVERSION_ID=\"{version}\"\nIMAGE_VERSION=\"{version}\"\n",
            version = options.image_version
        )
        .as_bytes(),
    )?;
    let cmdline = work.join("cmdline");
    write(&cmdline, cmdline_text.as_bytes())?;
    let signed = uki(
        options,
        &work,
        &vmlinuz,
        initrd.as_ref().map(|(path, _)| path.as_path()),
        &osrel,
        &cmdline,
    )?;
    progress(&format!("uki: {} bytes", signed.len()));

    progress(if root.is_some() {
        "disk: GPT with the ESP (EFI/BOOT/BOOTX64.EFI), the root and a data partition"
    } else {
        "disk: GPT with the ESP (EFI/BOOT/BOOTX64.EFI) and a data partition"
    });
    disk(
        options,
        &work,
        &options.out.join("uki.efi"),
        signed.len() as u64,
        root.as_ref().map(|root| root.partition.as_path()),
    )?;

    progress("firmware: enrolling PK, KEK and db into an OVMF variable store");
    ovmf_vars(options, &keys, &owner)?;
    let secureboot = options.out.join("secureboot");
    io(
        "cannot create the secureboot directory",
        std::fs::create_dir_all(&secureboot),
    )?;
    for name in crate::keys::SECURE_BOOT_KEYS {
        io(
            "cannot copy a certificate",
            std::fs::copy(
                keys.certificate(name),
                secureboot.join(format!("{name}.crt")),
            ),
        )?;
    }
    write(
        &secureboot.join("owner.guid"),
        format!("{owner}\n").as_bytes(),
    )?;

    progress("manifest: predicting PCRs 4, 7, 9, 11, 12, 13 and signing");
    let secure_boot = SecureBootKeys {
        owner: parse_guid(&owner)
            .ok_or_else(|| BuildError::Input("owner GUID unreadable".into()))?,
        pk: keys.certificate_der("PK")?,
        kek: keys.certificate_der("KEK")?,
        db: keys.certificate_der("db")?,
    };
    let events = predict_events(&signed, &secure_boot)?;
    let pcr_json: BTreeMap<String, String> = events
        .iter()
        .map(|(index, events)| {
            (
                index.to_string(),
                hex::encode(fold(events).unwrap_or_default()),
            )
        })
        .collect();
    let stub_bytes = read(&options.stub)?;
    let mut inputs = BTreeMap::new();
    inputs.insert("agent", sha256_hex(&read(&options.agent)?));
    inputs.insert("vmlinuz", sha256_hex(&read(&vmlinuz)?));
    if let Some((_, bytes)) = &initrd {
        inputs.insert("initrd", sha256_hex(bytes));
    }
    if let Some(root) = &root {
        inputs.insert("root_erofs", root.erofs_sha256.clone());
    }
    inputs.insert("cmdline", sha256_hex(cmdline_text.as_bytes()));
    inputs.insert("os-release", sha256_hex(&read(&osrel)?));
    inputs.insert("stub", sha256_hex(&stub_bytes));
    inputs.insert("ovmf_vars_template", sha256_hex(&read(&options.ovmf_vars)?));
    for name in crate::keys::SECURE_BOOT_KEYS {
        inputs.insert(name, sha256_hex(&keys.certificate_der(name)?));
    }
    let manifest = json!({
        "format": edgeward_bootchain::manifest::FORMAT,
        "image_version": options.image_version,
        "kernel": {"package": kernel.package, "version": kernel.version, "release": kernel.release, "config_sha256": kernel.config_sha256},
        "stub": {"package": "systemd-boot-efi", "version": package_version("systemd-boot-efi")},
        "cmdline": cmdline_text,
        "root": root.as_ref().map(|root| json!({
            "partuuid": crate::rootfs::ROOT_PARTUUID,
            "filesystem": "erofs",
            "data_blocks": root.tree.data_blocks(),
            "verity_root_hash": root.tree.root().to_hex(),
            "verity_salt": root.tree.salt().to_hex(),
        })),
        "secure_boot_owner": owner,
        "inputs": inputs,
        "outputs": {"uki.efi": sha256_hex(&signed)},
        "pcrs": {"sha256": pcr_json},
        "events": events,
    });
    sign_manifest(&options.out, &manifest, &keys.release_key()?)?;
    let _ = std::fs::remove_dir_all(&work);
    progress("done");
    Ok(BuildReport {
        manifest,
        uki_bytes: signed.len() as u64,
    })
}
