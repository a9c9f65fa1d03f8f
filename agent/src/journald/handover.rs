//! How PID 1 hands a service's output line to the journal: a native
//! protocol message with the usual fields plus the unit and the service's
//! main pid in two Basalt fields. The daemon believes those two only when
//! the kernel says the sender is PID 1 (uid 0), and drops them from every
//! entry either way.

use basalt_journal::ingest::{native, Fields};

/// The unit name, without `.service`.
pub const UNIT_FIELD: &str = "BASALT_PID1_UNIT";
/// The service's main pid.
pub const PID_FIELD: &str = "BASALT_PID1_PID";

/// The message PID 1 sends for one line.
pub fn encode(unit: &str, pid: Option<i32>, priority: u8, text: &str) -> Vec<u8> {
    let priority = priority.min(7).to_string();
    let pid = pid.map(|p| p.to_string()).unwrap_or_default();
    let mut fields: Vec<(&str, &[u8])> = vec![
        ("MESSAGE", text.as_bytes()),
        ("PRIORITY", priority.as_bytes()),
        ("SYSLOG_IDENTIFIER", unit.as_bytes()),
        (UNIT_FIELD, unit.as_bytes()),
    ];
    if !pid.is_empty() {
        fields.push((PID_FIELD, pid.as_bytes()));
    }
    native::encode(&fields)
}

/// What a hand-over message says about its origin.
#[derive(Debug, PartialEq, Eq)]
pub struct Handover {
    pub unit: String,
    pub pid: Option<i32>,
}

/// Remove the hand-over fields from `fields`; return them if `from_pid1`.
pub fn take(fields: &mut Fields, from_pid1: bool) -> Option<Handover> {
    let value = |fields: &Fields, name: &str| {
        fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    };
    let unit = value(fields, UNIT_FIELD);
    let pid = value(fields, PID_FIELD).and_then(|p| p.parse().ok());
    fields.retain(|(n, _)| n != UNIT_FIELD && n != PID_FIELD);
    match unit {
        Some(unit) if from_pid1 => Some(Handover { unit, pid }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_pid1_can_name_the_unit() {
        let message = encode("chrony", Some(300), 3, "two\nlines");
        let mut fields = native::parse(&message).unwrap();
        assert_eq!(
            take(&mut fields.clone(), true),
            Some(Handover {
                unit: "chrony".into(),
                pid: Some(300)
            })
        );
        assert_eq!(take(&mut fields, false), None);
        assert!(fields.iter().all(|(n, _)| !n.starts_with("BASALT_PID1")));
        assert!(fields.contains(&("MESSAGE".into(), b"two\nlines".to_vec())));
        assert!(fields.contains(&("PRIORITY".into(), b"3".to_vec())));
    }
}
