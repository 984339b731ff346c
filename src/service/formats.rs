//! Whether image data is taken, by Glance's rules over what `inspect` found in it: the
//! detected format must be the image's `disk_format` (a declared `raw` takes any bytes),
//! and the detected format's safety checks must pass; then `virtual_size` is recorded.
//! Only `bare` containers are inspected, as in Glance. The inspection itself is not here.

use super::Catalog;
use super::data::Judge;
use crate::domain::DomainError;
use crate::domain::image::Image;
use crate::inspect::{Format, Inspection, Refusal};

impl Catalog {
    /// How data for `image` is judged, with this generation's settings.
    pub(super) fn judge_for(&self, image: &Image) -> Judge {
        let (image, require_match) = (image.clone(), self.require_format_match);
        Box::new(move |inspection, size| Ok(judge(&image, inspection, size, require_match)?))
    }
}

/// Formats the inspector knows by name: a `disk_format` outside them (ami, ari, aki,
/// ploop) takes data that looks raw.
const INSPECTED: [Format; 10] = [
    Format::Raw,
    Format::Qcow2,
    Format::Qed,
    Format::Vhd,
    Format::Vhdx,
    Format::Vmdk,
    Format::Vdi,
    Format::Iso,
    Format::Gpt,
    Format::Luks,
];

/// The virtual size to record for `image`'s data of `size` bytes, or Glance's 415. With
/// `require_match` off, a mismatch only loses the virtual size; unsafe data is refused
/// either way (Glance skips the safety checks after a mismatch it lets through; glint
/// does not).
fn judge(
    image: &Image,
    inspection: &Inspection,
    size: u64,
    require_match: bool,
) -> Result<Option<u64>, DomainError> {
    if image.container_format.as_deref() != Some("bare") {
        return Ok(None);
    }
    let declared = image.disk_format.as_deref().unwrap_or("");
    let detected = inspection.format;
    let mismatch = |message: String| {
        if require_match {
            Err(DomainError::UnacceptableData(message))
        } else {
            tracing::warn!(image_id = %image.id, %message, "format mismatch taken (images.require_format_match = false)");
            Ok(None)
        }
    };
    let virtual_size = match &inspection.refusal {
        Some(refusal @ (Refusal::Ambiguous(_) | Refusal::Incomplete)) => {
            mismatch(refusal.to_string())?
        }
        _ if detected.name() == declared => inspection.virtual_size,
        _ if detected == Format::Raw && !INSPECTED.iter().any(|f| f.name() == declared) => None,
        _ if declared == "raw" => {
            tracing::warn!(image_id = %image.id, detected = detected.name(), "data declared raw looks like another format; taken as raw bytes");
            Some(size)
        }
        _ => mismatch(format!(
            "Image disk_format {declared} does not match stream data {}",
            detected.name()
        ))?,
    };
    if let Some(Refusal::Unsafe(failures)) = &inspection.refusal {
        let checks: Vec<String> = failures
            .iter()
            .map(|(name, reason)| format!("{name}: {reason}"))
            .collect();
        tracing::warn!(image_id = %image.id, format = detected.name(), failed = %checks.join("; "), "image data refused");
        return Err(DomainError::UnacceptableData(
            "Image failed safety checks".into(),
        ));
    }
    Ok(virtual_size)
}
