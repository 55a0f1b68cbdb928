//! The ACPI power button (QEMU's `system_powerdown`, or the appliance's front panel): read
//! from the kernel's input device named "Power Button", it stops the appliance cleanly.

use std::path::PathBuf;

use anyhow::{anyhow, Context, Result};
use std::io::Read as _;

/// linux/input-event-codes.h
const EV_KEY: u16 = 0x01;
const KEY_POWER: u16 = 116;
/// struct input_event on 64-bit Linux: timeval (16 bytes), type, code (u16 each), value (i32).
const EVENT_BYTES: usize = 24;

/// The event device of the power button.
fn device() -> Result<PathBuf> {
    for entry in std::fs::read_dir("/sys/class/input").context("cannot list /sys/class/input")? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(name) = name.to_str().filter(|name| name.starts_with("event")) else {
            continue;
        };
        let label = std::fs::read_to_string(entry.path().join("device/name")).unwrap_or_default();
        if label.trim() == "Power Button" {
            return Ok(PathBuf::from("/dev/input").join(name));
        }
    }
    Err(anyhow!(
        "no input device is named \"Power Button\" (a kernel without ACPI_BUTTON and INPUT_EVDEV, or their modules not loaded)"
    ))
}

/// Whether one input event is the power key going down.
fn is_power_press(event: &[u8; EVENT_BYTES]) -> bool {
    let kind = u16::from_ne_bytes([event[16], event[17]]);
    let code = u16::from_ne_bytes([event[18], event[19]]);
    let value = i32::from_ne_bytes([event[20], event[21], event[22], event[23]]);
    kind == EV_KEY && code == KEY_POWER && value == 1
}

/// Returns when the power button is pressed.
pub async fn pressed() -> Result<()> {
    let path = device()?;
    let mut file =
        std::fs::File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
    // A thread of its own, not the runtime's blocking pool: the runtime would wait for this
    // read when it shuts down, and the read ends only with a press.
    let (pressed, press) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("power-button".into())
        .spawn(move || {
            let mut event = [0u8; EVENT_BYTES];
            let outcome = loop {
                match file.read_exact(&mut event) {
                    Ok(()) if is_power_press(&event) => break Ok(()),
                    Ok(()) => {}
                    Err(error) => break Err(error),
                }
            };
            let _ = pressed.send(outcome);
        })
        .context("cannot start the power button's thread")?;
    press
        .await
        .context("the power button's thread ended")?
        .with_context(|| format!("cannot read {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: u16, code: u16, value: i32) -> [u8; EVENT_BYTES] {
        let mut bytes = [0u8; EVENT_BYTES];
        bytes[16..18].copy_from_slice(&kind.to_ne_bytes());
        bytes[18..20].copy_from_slice(&code.to_ne_bytes());
        bytes[20..24].copy_from_slice(&value.to_ne_bytes());
        bytes
    }

    #[test]
    fn only_the_power_key_going_down_counts() {
        assert!(is_power_press(&event(EV_KEY, KEY_POWER, 1)));
        // Released, another key, a sync event.
        assert!(!is_power_press(&event(EV_KEY, KEY_POWER, 0)));
        assert!(!is_power_press(&event(EV_KEY, 115, 1)));
        assert!(!is_power_press(&event(0, 0, 0)));
    }
}
