//! Whether image data is taken, by Glance's rules over what `inspect` found in it: the
//! detected format must be the image's `disk_format` (a declared `raw` takes any bytes),
//! and the detected format's safety checks must pass; then `virtual_size` is recorded.
//! Only `bare` containers are inspected, as in Glance. The inspection itself is not here.

use super::Catalog;
use super::data::Judge;
use crate::domain::DomainError;
use crate::domain::image::Image;
use crate::inspect::{Format, Inspection, Refusal};

/// What a deployment takes beyond the inspector's own checks.
#[derive(Debug, Clone)]
pub struct FormatRules {
    /// `images.require_format_match`.
    pub require_match: bool,
    /// `images.vmdk_allowed_types`.
    pub vmdk_allowed_types: Vec<String>,
    /// `images.gpt_safety_checks_nonfatal`.
    pub gpt_nonfatal: Vec<String>,
}

impl Catalog {
    /// How data for `image` is judged, with this generation's settings.
    pub(super) fn judge_for(&self, image: &Image) -> Judge {
        let (image, rules) = (image.clone(), self.format_rules.clone());
        Box::new(move |inspection, size| Ok(judge(&image, inspection, size, &rules)?))
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
    rules: &FormatRules,
) -> Result<Option<u64>, DomainError> {
    if image.container_format.as_deref() != Some("bare") {
        return Ok(None);
    }
    let declared = image.disk_format.as_deref().unwrap_or("");
    let detected = inspection.format;
    if let Some(compression) = inspection.compression {
        tracing::info!(image_id = %image.id, compression = compression.name(), "image data is compressed");
    }
    let mismatch = |message: String| {
        if rules.require_match {
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
    let refused = |checks: &str| {
        tracing::warn!(image_id = %image.id, format = detected.name(), failed = %checks, "image data refused");
        Err(DomainError::UnacceptableData(
            "Image failed safety checks".into(),
        ))
    };
    if detected == Format::Vmdk
        && !inspection.subformat.as_deref().is_some_and(|create_type| {
            rules
                .vmdk_allowed_types
                .iter()
                .any(|allowed| allowed.eq_ignore_ascii_case(create_type))
        })
    {
        return refused("createType not in images.vmdk_allowed_types");
    }
    if let Some(Refusal::Unsafe(failures)) = &inspection.refusal {
        if detected == Format::Gpt
            && failures
                .iter()
                .all(|(name, _)| rules.gpt_nonfatal.contains(name))
        {
            tracing::warn!(image_id = %image.id, failed = ?failures, "GPT safety checks failed, taken as non-fatal (images.gpt_safety_checks_nonfatal)");
            return Ok(virtual_size);
        }
        let checks: Vec<String> = failures
            .iter()
            .map(|(name, reason)| format!("{name}: {reason}"))
            .collect();
        return refused(&checks.join("; "));
    }
    Ok(virtual_size)
}

#[cfg(test)]
mod tests {
    use serde_json::{Value, json};

    use super::*;
    use crate::domain::caller::Caller;
    use crate::domain::image::{Quotas, new_image};

    fn image(disk_format: &str) -> Image {
        let Value::Object(attributes) =
            json!({"disk_format": disk_format, "container_format": "bare"})
        else {
            unreachable!("an object")
        };
        new_image(
            attributes,
            &Caller::default(),
            0,
            "id".into(),
            &Quotas::default(),
        )
        .expect("a valid image")
    }

    fn rules(vmdk: &[&str], gpt_nonfatal: &[&str]) -> FormatRules {
        FormatRules {
            require_match: true,
            vmdk_allowed_types: vmdk.iter().map(|t| t.to_string()).collect(),
            gpt_nonfatal: gpt_nonfatal.iter().map(|t| t.to_string()).collect(),
        }
    }

    #[test]
    fn a_vmdk_is_taken_only_of_an_allowed_create_type() {
        let sparse = Inspection {
            format: Format::Vmdk,
            virtual_size: Some(1 << 20),
            refusal: None,
            compression: None,
            subformat: Some("monolithicsparse".into()),
        };
        let vmdk = image("vmdk");
        let defaults = rules(&["streamOptimized", "monolithicSparse"], &[]);
        assert_eq!(
            judge(&vmdk, &sparse, 4096, &defaults).ok(),
            Some(Some(1 << 20))
        );
        let stream_only = rules(&["streamOptimized"], &[]);
        assert!(judge(&vmdk, &sparse, 4096, &stream_only).is_err());
        // Declared raw, its bytes still may not be a VMDK of a refused type.
        assert!(judge(&image("raw"), &sparse, 4096, &rules(&[], &[])).is_err());
    }

    #[test]
    fn gpt_checks_named_nonfatal_do_not_refuse_the_disk() {
        let gpt = Inspection {
            format: Format::Gpt,
            virtual_size: Some(8192),
            refusal: Some(Refusal::Unsafe(vec![(
                "mbr".into(),
                "GPT MBR has no partitions defined".into(),
            )])),
            compression: None,
            subformat: None,
        };
        let declared = image("gpt");
        assert!(judge(&declared, &gpt, 8192, &rules(&[], &[])).is_err());
        assert_eq!(
            judge(&declared, &gpt, 8192, &rules(&[], &["mbr"])).ok(),
            Some(Some(8192))
        );
        assert!(judge(&declared, &gpt, 8192, &rules(&[], &["gptmbr"])).is_err());
    }
}
