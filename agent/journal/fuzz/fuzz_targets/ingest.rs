//! The ingest parsers on arbitrary bytes: native protocol, syslog (RFC
//! 3164 and 5424), `/dev/kmsg` records, stream lines and export streams.
#![no_main]

use basalt_journal::export::ExportReader;
use basalt_journal::ingest::{as_refs, kmsg, native, stream, syslog};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some(fields) = native::parse(data).ok().filter(|f| !f.is_empty()) {
        // What parses must encode and parse back to the same fields.
        let encoded = native::encode(&as_refs(&fields));
        let again = native::parse(&encoded).expect("re-encoded native message");
        assert_eq!(as_refs(&again), as_refs(&fields));
    }
    let _ = syslog::parse(data);
    if let Some(record) = kmsg::parse(data) {
        let _ = record.fields();
    }
    let (lines, _rest) = stream::split_lines(data);
    for line in lines {
        let _ = stream::line_fields(line, "fuzz", 6);
    }
    let mut reader = ExportReader::new(data);
    while let Ok(Some(entry)) = reader.next_entry() {
        let _ = entry.timestamps();
        let _ = entry.field_refs();
    }
});
